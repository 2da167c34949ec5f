package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// A primary SIGKILLed under traffic on a Sentinel-managed deployment (two
// replicas, --redis-replicas 1, passwords on the data nodes and on the
// Sentinels): the nodes are not ready while no primary answers, are ready
// and chat across nodes again within 10 s of the promotion, keep their
// sockets, and lose no acknowledged message: each is in the new primary's
// history once and reached every client once, in order. Neither password
// reaches the logs.
func TestSentinelFailoverUnderTraffic(t *testing.T) {
	const pw, spw = "s3cret-data", "s3cret-sentinel"
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 2, Password: pw, SentinelPassword: spw})
	layer := fmt.Sprintf("redis-sentinel://:%s@%s/%s?sentinel_password=%s", pw, strings.Join(s.Addrs(), ","), s.MasterName(), spw)
	args := []string{"--rate", "0", "--redis-replicas", "1"}
	nodes := []*testnode.Node{
		testnode.Start(t, testnode.Options{Layer: layer, Args: args}),
		testnode.Start(t, testnode.Options{Layer: layer, Args: args}),
	}
	for _, n := range nodes {
		if _, err := lbReady(n, http.StatusOK, 10*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, n.Log())
		}
	}
	ctx := timeout(t, 120*time.Second)
	const room = "Failover Room"
	var counters []*lbCounter
	for i := range 4 {
		k := newLBCounter(ctx, t, nodes[i/2].URL(), fmt.Sprintf("f%d", i), room)
		k.dial(ctx, t)
		counters = append(counters, k)
	}
	stop := lbRun(counters, 300*time.Millisecond) // at most 20 unavailable errors in 10 s, or a client is closed with 1008
	defer stop()
	lbSetSending(counters, true)
	time.Sleep(2 * time.Second) // traffic before the kill

	old := s.Primary(t)
	old.Kill()
	killed := time.Now()
	for _, n := range nodes {
		if took, err := lbReady(n, http.StatusServiceUnavailable, 5*time.Second); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s: /readyz 503 %v after the primary died", n.Addr(), took)
		}
	}
	primary := s.WaitFailover(t, old, 30*time.Second)
	promoted := time.Now()
	t.Logf("%s promoted %v after the kill", primary.Addr(), promoted.Sub(killed))
	for _, n := range nodes {
		if took, err := lbReady(n, http.StatusOK, 10*time.Second); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s: /readyz 200 %v after the promotion", n.Addr(), took)
		}
	}
	// Chat across nodes goes on within 10 s of the promotion.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		back := true
		for i, k := range counters {
			k.mu.Lock()
			back = back && len(k.crossAfter(promoted.UnixMilli(), counters[(i+2)%4].name)) > 0
			k.mu.Unlock()
		}
		if back {
			t.Logf("cross-node chat back %v after the promotion", time.Since(promoted))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cross-node message for every client within 10 s of the promotion")
		}
	}
	time.Sleep(2 * time.Second) // traffic after the failover
	lbSetSending(counters, false)
	if err := lbDrain(ctx, counters, 5*time.Second); err != nil {
		t.Error(err)
	}
	if err := lbSettle(counters, 10*time.Second, nil); err != nil {
		t.Error(err)
	}
	stop()

	// The new primary's history: every acknowledged message, each once.
	rc := redis.NewClient(&redis.Options{Addr: primary.Addr(), Password: pw})
	defer rc.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	xs, err := rc.XRange(hctx, "chatterpro:{"+room+"}:h", "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE on the new primary: %v", err)
	}
	inHistory := make(map[string]string, len(xs))
	texts := make(map[string]int)
	for _, x := range xs {
		d, _ := x.Values["d"].(string)
		inHistory[x.ID] = d
		texts[d]++
	}
	for d, n := range texts {
		if n > 1 {
			t.Errorf("recorded %d times: %s", n, d)
		}
	}
	lost, acked, unavailable := 0, 0, 0
	for _, k := range counters {
		k.check(t)
		k.mu.Lock()
		unavailable += k.unavailable
		for text, id := range k.acked {
			acked++
			if d, ok := inHistory[id]; !ok || !strings.Contains(d, `"text":"`+text+`"`) {
				lost++
				t.Errorf("%s: acknowledged %s %q is not in the new primary's history", k.name, id, text)
			}
		}
		if len(k.closes) > 0 {
			t.Errorf("%s lost its connection during the failover (%v); nodes should keep their sockets", k.name, k.closes)
		}
		k.mu.Unlock()
	}
	for i, n := range nodes {
		if !n.Running() {
			t.Errorf("node %d died during the failover\n%s", i, n.Log())
		}
		if log := n.Log(); strings.Contains(log, pw) || strings.Contains(log, spw) {
			t.Errorf("node %d logged a password:\n%s", i, log)
		}
	}
	t.Logf("%d acknowledged, %d of them lost, %d refused as unavailable, %d in history", acked, lost, unavailable, len(xs))
}

// Sentinels that refuse the password, or none of which knows the
// primary's name, are settings to fix: the node does not start and says
// so, without showing the password.
func TestSentinelWrongSettings(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{SentinelPassword: "rightpass"})
	addrs := strings.Join(s.Addrs(), ",")
	bin := testnode.Build(t)
	for _, tc := range []struct{ layer, want string }{
		{"redis-sentinel://" + addrs + "/" + s.MasterName() + "?sentinel_password=nopass", "refused the connection"},
		{"redis-sentinel://" + addrs + "/nosuchmaster?sentinel_password=rightpass", "no Sentinel knows a primary named"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--secret", testnode.DefaultSecret, "--layer", tc.layer).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("--layer %s: %v; want exit code 1\n%s", tc.layer, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("--layer %s: output does not say %q:\n%s", tc.layer, tc.want, out)
		}
		if strings.Contains(string(out), "nopass") || strings.Contains(string(out), "rightpass") {
			t.Errorf("--layer %s: the password is in the output:\n%s", tc.layer, out)
		}
	}
}

// answer returns c's next message frame with the given text or error
// frame: the answer to a message it sent.
func answer(ctx context.Context, t *testing.T, c *testnode.Client, text string) testnode.Frame {
	t.Helper()
	for {
		f, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("%s: waiting for the answer to %q: %v", c.Nickname, text, err)
		}
		if f.Type == "error" || f.Type == "message" && f.Text == text {
			return f
		}
	}
}

// With --redis-replicas 1 and the only replica stalled, a message with a
// cid is answered unavailable though the primary recorded it (and another
// node may have delivered it); sent again with the same cid once the
// replica is back, it is answered with the recorded message: one message
// in the history, one for every client, one for the sender.
func TestSentinelCIDResendAfterUnavailable(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1})
	layer := fmt.Sprintf("redis-sentinel://%s/%s", strings.Join(s.Addrs(), ","), s.MasterName())
	opts := testnode.Options{Layer: layer, Args: []string{"--rate", "0", "--redis-replicas", "1"}}
	a, b := testnode.Start(t, opts), testnode.Start(t, opts)
	ctx := timeout(t, 60*time.Second)
	const room = "Resend Room"
	alice := connect(ctx, t, a.URL(), "Alice", room)
	bob := connect(ctx, t, b.URL(), "Bob", room)
	send := func(text, cid string) testnode.Frame {
		t.Helper()
		if err := alice.SendRaw(ctx, []byte(`{"type":"message","text":"`+text+`","cid":"`+cid+`"}`)); err != nil {
			t.Fatal(err)
		}
		return answer(ctx, t, alice, text)
	}
	// A loaded machine may keep the replica from answering within the
	// replica timeout: a cid of its own for each try.
	for i := 0; ; i++ {
		if f := send("warm", fmt.Sprint("w", i)); f.Type == "message" {
			break
		}
		if i == 5 {
			t.Fatalf("no message acknowledged with the replica up")
		}
	}

	replica := s.Nodes()[1]
	replica.Pause()
	resumed := false
	defer func() {
		if !resumed {
			replica.Resume()
		}
	}()
	if f := send("hello", "c-1"); f.Type != "error" || f.Code != "unavailable" {
		t.Fatalf("with the replica stalled: %v; want an unavailable error", f)
	}
	replica.Resume()
	resumed = true
	var rec testnode.Frame
	for i := 0; ; i++ {
		if rec = send("hello", "c-1"); rec.Type == "message" {
			break
		}
		if i == 10 {
			t.Fatalf("sent again with the replica back: %v", rec)
		}
	}
	if rec.CID != "c-1" || rec.User != "Alice" || rec.ID == "" {
		t.Fatalf("sent again: %v; want the recorded message", rec)
	}

	// The history: that message, once.
	rc := redis.NewClient(&redis.Options{Addr: s.Primary(t).Addr()})
	defer rc.Close()
	xs, err := rc.XRange(ctx, "chatterpro:{"+room+"}:h", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range xs {
		if d, _ := x.Values["d"].(string); strings.Contains(d, `"text":"hello"`) {
			ids = append(ids, x.ID)
		}
	}
	if len(ids) != 1 || ids[0] != rec.ID {
		t.Fatalf("the history holds hello as %v; want once, as %s", ids, rec.ID)
	}
	// Every client: once (Bob's node delivered it when it was recorded),
	// Alice only as the answer.
	if err := alice.SendRaw(ctx, []byte(`{"type":"message","text":"after","cid":"c-2"}`)); err != nil {
		t.Fatal(err)
	}
	bobGot := texts(messagesUntil(ctx, t, bob, 300*time.Millisecond, hasAll("after")))
	hellos := 0
	for _, txt := range bobGot {
		if txt == "hello" {
			hellos++
		}
	}
	if hellos != 1 {
		t.Errorf("Bob got %q; want hello once", bobGot)
	}
	if got := texts(messagesUntil(ctx, t, alice, 300*time.Millisecond, hasAll("after"))); slices.Contains(got, "hello") {
		t.Errorf("Alice got %q after the answer; want no second hello", got)
	}
	// A reload: the history frame holds it once.
	carol := connect(ctx, t, b.URL(), "Carol", room)
	n := 0
	for _, m := range carol.Received()[0].Messages {
		if m.Text == "hello" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("a new client's history holds hello %d times, want once", n)
	}
}
