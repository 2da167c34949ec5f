package main_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// lbJoin connects name to room on base and reads up to its welcome notice.
func lbJoin(ctx context.Context, t testing.TB, base, name, room string) *testnode.Client {
	t.Helper()
	c, err := testnode.Connect(ctx, base, name, room)
	if err != nil {
		t.Fatalf("%s joining %q on %s: %v", name, room, base, err)
	}
	t.Cleanup(func() { c.Close(websocket.StatusNormalClosure) })
	if _, err := c.Await(ctx, "notice", func(f testnode.Frame) bool { return f.Text == "Welcome to ChatterPro!" }); err != nil {
		t.Fatalf("%s: no welcome: %v", name, err)
	}
	return c
}

// lbAwaitUsers waits up to d for a users frame for which ok is true.
func lbAwaitUsers(ctx context.Context, t testing.TB, c *testnode.Client, d time.Duration, what string, ok func(testnode.Frame) bool) testnode.Frame {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	f, err := c.Await(wctx, "users", ok)
	if err != nil {
		t.Fatalf("%s: no users frame %s within %v: %v", c.Nickname, what, d, err)
	}
	return f
}

// lbNotices counts the notices with this text c has received.
func lbNotices(c *testnode.Client, text string) int { return lbNoticesFrom(c, 0, text) }

// lbNoticesFrom counts the notices with this text among the frames c
// received after the first from.
func lbNoticesFrom(c *testnode.Client, from int, text string) int {
	n := 0
	for _, f := range c.Received()[from:] {
		if f.Type == "notice" && f.Text == text {
			n++
		}
	}
	return n
}

func lbWithout(names ...string) func(testnode.Frame) bool {
	return func(f testnode.Frame) bool {
		for _, n := range names {
			if f.HasUser(n) {
				return false
			}
		}
		return true
	}
}

func TestFailureKilledNodeLeavesOnlineListsOnce(t *testing.T) {
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	const ttl = 3 * time.Second
	args := []string{"--presence-ttl", ttl.String()}
	a := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	b := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	c := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	ctx := timeout(t, 40*time.Second)
	const room = "Crash Room"

	watchA := lbJoin(ctx, t, a.URL(), "Watcher A", room)
	watchC := lbJoin(ctx, t, c.URL(), "Watcher C", room)
	lbJoin(ctx, t, b.URL(), "Victim 1", room)
	lbJoin(ctx, t, b.URL(), "Victim 2", room)
	for _, w := range []*testnode.Client{watchA, watchC} {
		lbAwaitUsers(ctx, t, w, 5*time.Second, "listing all four", func(f testnode.Frame) bool { return f.Count == 4 })
	}

	b.Kill() // no goodbye: its presence entries only expire
	killed := time.Now()
	for _, w := range []*testnode.Client{watchA, watchC} {
		f := lbAwaitUsers(ctx, t, w, ttl+5*time.Second-time.Since(killed), "without the victims within TTL+5s", lbWithout("Victim 1", "Victim 2"))
		if f.Count != 2 {
			t.Errorf("%s: users after the kill %v; want the two watchers", w.Nickname, f)
		}
		t.Logf("%s: victims gone from the list %v after the kill (TTL %v)", w.Nickname, time.Since(killed), ttl)
	}
	// Real time is what is tested: each node sweeps every second, and a
	// node in another process gives no sign of having swept; two sweeps
	// each would have sent a second announcement by now.
	time.Sleep(2 * time.Second)
	for _, w := range []*testnode.Client{watchA, watchC} {
		for _, v := range []string{"Victim 1", "Victim 2"} {
			if n := lbNotices(w, v+" has left the chat"); n != 1 {
				t.Errorf("%s saw %q %d times; want once", w.Nickname, v+" has left the chat", n)
			}
		}
	}
}

func TestFailureDrainHandsPresenceOver(t *testing.T) {
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	const grace = 4 * time.Second
	args := []string{"--presence-ttl", "3s", "--grace", grace.String()}
	a := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	b := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	ctx := timeout(t, 40*time.Second)
	const room = "Drain Room"

	watcher := lbJoin(ctx, t, a.URL(), "Watcher", room)
	mover := lbJoin(ctx, t, b.URL(), "Mover", room)
	quitter := lbJoin(ctx, t, b.URL(), "Quitter", room)
	lbAwaitUsers(ctx, t, watcher, 5*time.Second, "listing all three", func(f testnode.Frame) bool { return f.Count == 3 })
	if err := mover.Send(ctx, "before the drain"); err != nil {
		t.Fatal(err)
	}
	ack, err := mover.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "before the drain" })
	if err != nil {
		t.Fatalf("mover: no ack: %v", err)
	}

	seen, moverSeen := len(watcher.Received()), len(mover.Received())
	b.Term()
	termed := time.Now()
	for _, v := range []*testnode.Client{mover, quitter} {
		_, err := v.Await(ctx, "never", nil)
		if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
			t.Fatalf("%s: connection ended with %v (%v); want 1012", v.Nickname, got, err)
		}
	}
	// The mover reconnects to the other node at once, as the browser does.
	if err := mover.DialTo(ctx, a.URL(), ack.ID); err != nil {
		t.Fatalf("mover: reconnecting to the other node: %v", err)
	}
	if f, err := mover.Await(ctx, "history", nil); err != nil || f.Reset {
		t.Fatalf("mover: resume on the other node: %v, %v", f, err)
	}
	code, took, err := b.Wait(10 * time.Second)
	if err != nil {
		t.Fatalf("the drained node did not exit within 10 s of SIGTERM\n%s", b.Log())
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM; want 0", code)
	}
	t.Logf("the drained node exited %v after SIGTERM", took)

	// A drain is a loss like any other but a leave: both stay listed through
	// the grace period. The mover is back within it and never announced;
	// the quitter, who did not come back, is announced once it is over,
	// with the users frame that drops him.
	wctx, cancel := context.WithTimeout(ctx, grace+5*time.Second)
	defer cancel()
	if _, err := watcher.Await(wctx, "notice", func(f testnode.Frame) bool { return f.Text == "Quitter has left the chat" }); err != nil {
		t.Fatalf("no notice of the quitter's departure within grace+5s: %v", err)
	}
	left := time.Since(termed)
	t.Logf("quitter's departure announced %v after SIGTERM (grace %v)", left, grace)
	if left < grace-500*time.Millisecond {
		t.Errorf("quitter announced %v after SIGTERM, before the grace period of %v was over", left, grace)
	}
	for _, f := range watcher.Received()[seen:] {
		if f.Type == "notice" && f.Text == "Quitter has left the chat" {
			break
		}
		if f.Type == "users" && !f.HasUser("Quitter") {
			t.Errorf("a users frame dropped the quitter before his departure was announced: %+v", f)
		}
	}
	lbAwaitUsers(ctx, t, watcher, 3*time.Second, "listing the mover, without the quitter", func(f testnode.Frame) bool {
		return f.HasUser("Mover") && !f.HasUser("Quitter") && f.Count == 2
	})
	// Real time: a node sweeps every second and gives no sign of it; a
	// late announcement would come within this window.
	time.Sleep(1500 * time.Millisecond)
	for text, want := range map[string]int{
		"Quitter has left the chat": 1,
		"Mover has left the chat":   0,
		"Mover has joined the chat": 0,
	} {
		if n := lbNoticesFrom(watcher, seen, text); n != want {
			t.Errorf("watcher saw %q %d times; want %d", text, n, want)
		}
	}
	if n := lbNoticesFrom(mover, moverSeen, "Mover has joined the chat"); n != 0 {
		t.Errorf("mover saw its own join announced again after moving")
	}
}

// lbReady polls a node's /readyz until it answers want, for up to d.
func lbReady(n *testnode.Node, want int, d time.Duration) (time.Duration, error) {
	start := time.Now()
	last := 0
	err := testkit.Poll(d, func() error {
		if last, _ = n.Ready(); last != want {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("/readyz of %s still %d after %v; want %d", n.Addr(), last, d, want)
	}
	return time.Since(start), nil
}

func TestFailureRedisRestartUnderTraffic(t *testing.T) {
	cl := startLBCluster(t, 2, "--rate", "0", "--log-level", "debug")
	ctx := timeout(t, 90*time.Second)
	const room = "Outage Room"

	// Two clients on each node, connected directly so that every message
	// from one pair to the other crosses nodes through Redis.
	var counters []*lbCounter
	for i := 0; i < 4; i++ {
		k := newLBCounter(ctx, t, cl.nodes[i/2].URL(), fmt.Sprintf("r%d", i), room)
		k.dial(ctx, t)
		counters = append(counters, k)
	}
	stop := lbRun(counters, 250*time.Millisecond)
	defer stop()
	lbSetSending(counters, true)
	lbAwaitAcked(t, counters, 8, 15*time.Second, "traffic from everyone before Redis dies") // about 2 s of it

	cl.redis.Kill()
	for _, n := range cl.nodes {
		if took, err := lbReady(n, http.StatusServiceUnavailable, 5*time.Second); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s: /readyz 503 %v after Redis died", n.Addr(), took)
		}
	}
	time.Sleep(2 * time.Second) // the outage lasting, under traffic, is the case tested
	for _, n := range cl.nodes {
		if code, _ := n.Ready(); code != http.StatusServiceUnavailable {
			t.Errorf("%s: /readyz %d while Redis is down; want 503", n.Addr(), code)
		}
		r, err := n.Get(ctx, "/")
		if err != nil || r.StatusCode != http.StatusOK {
			t.Errorf("%s: join page while Redis is down: %v %v; want 200", n.Addr(), r, err)
		}
	}

	cl.redis.Restart(t)
	restarted := time.Now()
	for _, n := range cl.nodes {
		if took, err := lbReady(n, http.StatusOK, 10*time.Second); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s: /readyz 200 %v after Redis returned", n.Addr(), took)
		}
	}
	lbAwaitAcked(t, counters, 12, 20*time.Second, "traffic from everyone after Redis returned") // about 3 s of it
	lbSetSending(counters, false)
	if err := lbDrain(ctx, counters, 5*time.Second); err != nil {
		t.Error(err)
	}
	if err := lbSettle(counters, 10*time.Second, func() []string { return cl.history(t, room) }); err != nil {
		t.Error(err)
	}
	stop()

	for i, n := range cl.nodes {
		if !n.Running() {
			t.Errorf("node %d died during the Redis outage\n%s", i, n.Log())
		}
	}
	// Chat across nodes works again within 5 s of Redis returning: the
	// first message recorded after the restart by one pair reaches the
	// other pair within 5 s of the restart.
	restartMs := restarted.UnixMilli()
	for i, k := range counters {
		other := counters[(i+2)%4].name
		k.mu.Lock()
		first := time.Duration(-1)
		for _, at := range k.crossAfter(restartMs, other) {
			first = at.Sub(restarted)
			break
		}
		k.mu.Unlock()
		if first < 0 || first > 5*time.Second {
			t.Errorf("%s: first message from %s (other node) after the restart came %v after it; want within 5 s", k.name, other, first)
		} else {
			t.Logf("%s: cross-node chat back %v after Redis returned", k.name, first)
		}
	}

	recorded := cl.history(t, room)
	acked := lbAllAcked(counters)
	unavailable := 0
	for _, k := range counters {
		k.check(t)
		k.mu.Lock()
		unavailable += k.unavailable
		if answered := len(k.acked) + k.unavailable; answered < k.sent {
			t.Errorf("%s sent %d messages but got only %d acks and %d unavailable errors: some sends met silence", k.name, k.sent, len(k.acked), k.unavailable)
		}
		if len(k.closes) > 0 {
			t.Errorf("%s lost its connection during the Redis outage (%v); nodes should keep their sockets", k.name, k.closes)
		}
		k.mu.Unlock()
		if n := k.missing(acked); n > 0 {
			t.Errorf("%s misses %d of %d acknowledged messages", k.name, n, len(acked))
		}
		if n := k.missing(recorded); n > 0 {
			t.Errorf("%s misses %d of the %d messages in Redis's history", k.name, n, len(recorded))
		}
	}
	if t.Failed() {
		cl.explainMissing(t, room, counters)
	}
	if unavailable == 0 {
		t.Error("no unavailable error frames: the messages sent during the outage were not refused")
	}
	t.Logf("%d acknowledged, %d refused as unavailable, %d in history", len(acked), unavailable, len(recorded))
}

// crossAfter returns when k received messages from sender that Redis
// recorded at or after ms (Unix milliseconds), oldest first. k.mu is held.
func (k *lbCounter) crossAfter(ms int64, sender string) []time.Time {
	var out []time.Time
	for _, r := range k.arrivals {
		if r.user == sender && channellayer.CompareID(r.id, fmt.Sprintf("%d-0", ms)) >= 0 {
			out = append(out, r.at)
		}
	}
	return out
}

// A node started while its Redis is down serves anyway, not ready: /readyz
// 503 and joins refused with 503. Once Redis is up it is ready and chats,
// without a restart.
func TestFailureStartBeforeRedis(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, testnode.Options{Layer: fmt.Sprintf("redis://127.0.0.1:%d/0", port)})
	if code, err := n.Ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before Redis runs: %d, %v; want 503", code, err)
	}
	ctx := timeout(t, 40*time.Second)
	const room = "Early Room"
	early, err := testnode.Join(ctx, n.URL(), "Early", room)
	if err != nil {
		t.Fatal(err)
	}
	if err := early.Dial(ctx, ""); testnode.HandshakeStatus(err) != http.StatusServiceUnavailable {
		t.Fatalf("joining before Redis runs: %v; want HTTP 503", err)
	}

	redistest.StartOpts(t, redistest.Options{Port: port})
	if took, err := lbReady(n, http.StatusOK, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, n.Log())
	} else {
		t.Logf("ready %v after Redis started", took)
	}
	a := connect(ctx, t, n.URL(), "Ann", room)
	b := connect(ctx, t, n.URL(), "Bob", room)
	if err := a.Send(ctx, "hello once Redis is up"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "hello once Redis is up" }); err != nil {
		t.Fatalf("bob: %v", err)
	}
}

// A Redis that answers with an error is a setting to fix: the node does
// not start, and says what Redis answered.
func TestFailureWrongRedisSettings(t *testing.T) {
	rs := redistest.Start(t)
	locked := redistest.StartOpts(t, redistest.Options{Args: []string{"--requirepass", "rightpass"}})
	bin := testnode.Build(t)
	for _, tc := range []struct{ layer, want string }{
		{"redis://" + rs.Addr() + "/99", "DB index is out of range"},
		{"redis://:nopass@" + locked.Addr() + "/0", "WRONGPASS"},
		{"redis://" + locked.Addr() + "/0", "NOAUTH"},
		{"redis-cluster://" + rs.Addr(), "cluster support disabled"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, bin, "--addr", "127.0.0.1:0", "--secret", testnode.DefaultSecret, "--layer", tc.layer).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("--layer %s: %v; want exit code 1\n%s", tc.layer, err, out)
			continue
		}
		if !strings.Contains(string(out), "Redis refused the connection") || !strings.Contains(string(out), tc.want) {
			t.Errorf("--layer %s: output does not say Redis refused it with %q:\n%s", tc.layer, tc.want, out)
		}
		if strings.Contains(string(out), "nopass") {
			t.Errorf("--layer %s: the password is in the output:\n%s", tc.layer, out)
		}
	}
}

// A Redis that answers but cannot serve yet (LOADING its data after a
// restart) is an outage, not a wrong setting: the node starts, not ready.
func TestFailureStartWhileRedisLoads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() { // answers every command as a loading Redis does
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					// One answer per command: each starts a line with '*'.
					cmds := strings.Count("\n"+string(buf[:n]), "\n*")
					answer := strings.Repeat("-LOADING Redis is loading the dataset in memory\r\n", cmds)
					if _, err := c.Write([]byte(answer)); err != nil {
						return
					}
				}
			}()
		}
	}()
	n := testnode.Start(t, testnode.Options{Layer: "redis://" + ln.Addr().String() + "/0"})
	if code, err := n.Ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while Redis loads: %d, %v; want 503", code, err)
	}
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if log := n.Log(); !strings.Contains(log, "LOADING") {
			return fmt.Errorf("the log does not say why Redis cannot be used yet:\n%s", log)
		}
		return nil
	}, "the log saying Redis is loading")
}
