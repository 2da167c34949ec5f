package channellayer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// newFailoverClient returns a client of the primary the Sentinels name,
// tuned to fail fast as the server's is.
func newFailoverClient(t testing.TB, s *redistest.Sentinel) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName(),
		SentinelAddrs: s.Addrs(),
		DialTimeout:   500 * time.Millisecond,
		ReadTimeout:   2 * time.Second,
		WriteTimeout:  2 * time.Second,
		MaxRetries:    -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// historyOf reads a group's history stream straight from the node at addr:
// ID → the body's "text".
func historyOf(t testing.TB, addr, prefix, group string) map[string]string {
	t.Helper()
	c := newClient(t, addr)
	xs, err := c.XRange(tctx(t, 5*time.Second), prefix+":{"+group+"}:h", "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE on %s: %v", addr, err)
	}
	out := make(map[string]string, len(xs))
	for _, x := range xs {
		d, _ := x.Values["d"].(string)
		out[x.ID] = d
	}
	return out
}

// collector keeps what one member channel receives, in order, and the
// error that ended its receiving, if not its context.
type collector struct {
	mu   sync.Mutex
	msgs []channellayer.Message
	err  error
}

// collect receives on ch until ctx ends.
func collect(ctx context.Context, l channellayer.Layer, ch string, wg *sync.WaitGroup) *collector {
	c := &collector{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := l.Receive(ctx, ch)
			if err != nil {
				if ctx.Err() == nil {
					c.mu.Lock()
					c.err = err
					c.mu.Unlock()
				}
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
	return c
}

// ids returns the IDs received so far; it fails t if receiving ended early
// (an overflowed channel drops messages: not a failover's loss).
func (c *collector) ids(t testing.TB) []string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("member stopped receiving: %v", c.err)
	}
	out := make([]string, len(c.msgs))
	for i, m := range c.msgs {
		out[i] = m.ID
	}
	return out
}

// text is the "text" of a test message body.
func text(t testing.TB, m channellayer.Message) string {
	t.Helper()
	var v struct{ Text string }
	if err := m.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.Text
}

// TestRedisSentinelFailoverReplicas runs two layers on a Sentinel-managed
// primary with two replicas and Replicas: 1, records from both under
// traffic, and SIGKILLs the primary. The layers are not ready while no
// primary answers, work again once a replica is promoted, and no
// acknowledged record is lost: each is in the new primary's history, and
// each member received each once, in ID order.
func TestRedisSentinelFailoverReplicas(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 2})
	prefix := newPrefix()
	// The history keeps every record the senders can make (2 × 2000): a
	// record trimmed from it is not one lost in the failover. With the
	// default 100, a run that acknowledged 356 found the oldest "lost".
	// Members hold as many: the gap repair and the records held for the
	// replicas come in bursts, and a burst over the default capacity (100)
	// while a member's receiver waits for the CPU overflows it.
	opts := channellayer.RedisOptions{Replicas: 1, ReplicaTimeout: 500 * time.Millisecond, HistorySize: 4000, Capacity: 4000}
	a := openRedisLayer(t, newFailoverClient(t, s), prefix, opts, 10*time.Second)
	b := openRedisLayer(t, newFailoverClient(t, s), prefix, opts, 10*time.Second)
	const g = "failover"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	cols := []*collector{collect(ctx, a, newChan(t, a, g), &wg), collect(ctx, b, newChan(t, b, g), &wg)}

	var mu sync.Mutex
	acked := make(map[string]string) // ID → text
	var lastAck time.Time
	failed := 0
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for i, l := range []*channellayer.Redis{a, b} {
		senders.Go(func() {
			// Bounded: at most 2000 records, every 5 ms, until stop.
			for n := range 2000 {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				txt := fmt.Sprintf("%c-%d", 'a'+i, n)
				l.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]string{"text": txt}), func(m channellayer.Message, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed++
						return
					}
					acked[m.ID] = txt
					lastAck = time.Now()
				})
			}
		})
	}
	defer func() { close(stop); senders.Wait() }()
	acks := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if n := acks(); n < 50 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	}, "records acknowledged before the kill")

	old := s.Primary(t)
	old.Kill()
	killed := time.Now()
	for _, l := range []*channellayer.Redis{a, b} {
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if err := l.Check(tctx(t, time.Second)); !errors.Is(err, channellayer.ErrUnavailable) {
				return fmt.Errorf("Check = %v, want ErrUnavailable", err)
			}
			return nil
		}, "not ready while no primary answers")
	}
	primary := s.WaitFailover(t, old, 30*time.Second)
	promoted := time.Now()
	t.Logf("%s promoted %v after the kill", primary.Addr(), promoted.Sub(killed))
	for _, l := range []*channellayer.Redis{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		for l.Check(tctx(t, time.Second)) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("not ready 10 s after the promotion: %v", l.Check(tctx(t, time.Second)))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ready := time.Since(promoted)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		back := lastAck.After(promoted)
		mu.Unlock()
		if back {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record acknowledged within 10 s of the promotion")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("ready %v and recording %v after the promotion", ready, time.Since(promoted))
	before := acks()
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if n := acks(); n < before+50 {
			return fmt.Errorf("%d more acknowledged", n-before)
		}
		return nil
	}, "records acknowledged after the failover")
	close(stop)
	senders.Wait()
	stop = make(chan struct{}) // for the deferred close

	// Every acknowledged record is in the new primary's history, as sent,
	// and no text is there twice.
	hist := historyOf(t, primary.Addr(), prefix, g)
	mu.Lock()
	lost := 0
	for id, txt := range acked {
		if d, ok := hist[id]; !ok || !strings.Contains(d, `"text":"`+txt+`"`) {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged %s %q is not in the new primary's history (%q)", id, txt, d)
			}
		}
	}
	seen := make(map[string]bool)
	for id, d := range hist {
		if seen[d] {
			t.Errorf("recorded twice: %s %s", id, d)
		}
		seen[d] = true
	}
	t.Logf("%d acknowledged (%d lost), %d refused, %d in history", len(acked), lost, failed, len(hist))
	want := make(map[string]bool, len(acked))
	for id := range acked {
		want[id] = true
	}
	mu.Unlock()

	// Each member gets each acknowledged record once, in ID order.
	for i, c := range cols {
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			got := make(map[string]bool)
			for _, id := range c.ids(t) {
				got[id] = true
			}
			for id := range want {
				if !got[id] {
					return fmt.Errorf("member %d misses %s", i, id)
				}
			}
			return nil
		}, "members have every acknowledged record")
		ids := c.ids(t)
		for j := 1; j < len(ids); j++ {
			if channellayer.CompareID(ids[j-1], ids[j]) >= 0 {
				t.Errorf("member %d received %s after %s", i, ids[j], ids[j-1])
				break
			}
		}
	}
}

// TestRedisReplicasHoldAcknowledgement stalls the only replica (SIGSTOP)
// and cuts its link, records, SIGKILLs the primary and lets the stalled
// replica take over. With Replicas 0 the records are acknowledged (the
// sender's layer delivers its copy) and lost: the control that shows the
// test sees a loss. With Replicas 1 they fail with ErrUnavailable within
// the replica timeout, and the recording layer never delivers them.
//
// Records go through GroupSendRecorded, or GroupSendRecordedOnce (keyed):
// a keyed record refused is refused again when sent again while the
// replica is stalled (its WAIT covers the first record), and once the
// stalled replica is promoted without it, sending it again records it
// once.
func TestRedisReplicasHoldAcknowledgement(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		keyed    bool
	}{
		{"replicas=0", 0, false},
		{"replicas=1", 1, false},
		{"keyed/replicas=1", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.replicas
			s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1})
			prefix := newPrefix()
			const timeout = 300 * time.Millisecond
			l := openRedisLayer(t, newFailoverClient(t, s), prefix,
				channellayer.RedisOptions{Replicas: n, ReplicaTimeout: timeout}, 10*time.Second)
			const g = "held"
			ch := newChan(t, l, g)
			record := func(key, txt string) (channellayer.Message, bool, error) {
				m := mustMsg(t, "chat", map[string]string{"text": txt})
				if tc.keyed {
					return l.GroupSendRecordedOnce(tctx(t, 5*time.Second), g, key, m)
				}
				rec, err := l.GroupSendRecorded(tctx(t, 5*time.Second), g, m)
				return rec, false, err
			}
			// A loaded machine may keep the replica from answering within
			// the short timeout: try a few times.
			var first channellayer.Message
			var err error
			for i := range 5 { // each try a message of its own: a refused one is not delivered
				if first, _, err = record(fmt.Sprint("first-", i), fmt.Sprint("before-", i)); err == nil {
					break
				}
			}
			if err != nil {
				info, _ := newClient(t, s.Nodes()[0].Addr()).Info(tctx(t, time.Second), "replication").Result()
				t.Fatalf("record before the stall: %v\n%s", err, info)
			}
			if m := recv(t, l, ch); m.ID != first.ID {
				t.Fatalf("got %s, want %s", m.ID, first.ID)
			}

			// Stall the replica, then cut its link: what the primary
			// records from now on is on the primary alone (a stalled
			// replica would still find in its socket what was sent
			// before the primary died).
			replica := s.Nodes()[1]
			replica.Pause()
			if err := newClient(t, s.Nodes()[0].Addr()).Do(tctx(t, 5*time.Second), "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
				t.Fatalf("cutting the replica's link: %v", err)
			}
			var acked []string
			for i := range 3 {
				start := time.Now()
				m, again, err := record(fmt.Sprint("k", i), fmt.Sprint("stalled-", i))
				took := time.Since(start)
				switch {
				case n == 0 && err != nil:
					t.Fatalf("record %d with the replica stalled, Replicas 0: %v", i, err)
				case n == 0:
					acked = append(acked, m.ID)
					if got := recv(t, l, ch); got.ID != m.ID {
						t.Fatalf("got %s, want %s", got.ID, m.ID)
					}
				case !errors.Is(err, channellayer.ErrUnavailable):
					t.Fatalf("record %d with the replica stalled, Replicas 1: %v (again %v), want ErrUnavailable", i, err, again)
				case took < timeout || took > timeout+time.Second:
					t.Errorf("record %d failed after %v, want about the replica timeout %v", i, took, timeout)
				}
			}
			if tc.keyed {
				// Recorded on the primary, unconfirmed: sent again, it
				// is refused again, not acknowledged from the primary's
				// copy.
				stalled := 0
				for _, d := range historyOf(t, s.Nodes()[0].Addr(), prefix, g) {
					if strings.Contains(d, `"text":"stalled-`) {
						stalled++
					}
				}
				if stalled != 3 {
					t.Errorf("the primary holds %d of the refused records, want 3", stalled)
				}
				m, again, err := record("k0", "stalled-0")
				if !errors.Is(err, channellayer.ErrUnavailable) {
					t.Errorf("k0 sent again with the replica stalled: %+v, again %v, %v; want ErrUnavailable", m, again, err)
				}
			}
			if n == 1 {
				silent(t, l, ch) // the sender's copy never comes
			}

			old := s.Nodes()[0]
			old.Kill()
			replica.Resume()
			primary := s.WaitFailover(t, old, 30*time.Second)
			hist := historyOf(t, primary.Addr(), prefix, g)
			if _, ok := hist[first.ID]; !ok && n == 1 {
				// With Replicas 0 it may be: replication is asynchronous.
				t.Errorf("the record acknowledged before the stall is lost")
			}
			lost := 0
			for _, id := range acked {
				if _, ok := hist[id]; !ok {
					lost++
				}
			}
			t.Logf("Replicas %d: %d acknowledged while the replica was stalled, %d of them lost", n, len(acked), lost)
			if n == 0 && lost == 0 {
				t.Errorf("with Replicas 0 no acknowledged record was lost: the test cannot tell")
			}
			if n == 1 && len(acked)+lost != 0 {
				t.Errorf("with Replicas 1, %d records were acknowledged while the replica was stalled, %d lost", len(acked), lost)
			}
			if !tc.keyed {
				return
			}
			// The promoted replica never had the refused records: sent
			// again, each is recorded now, once, and acknowledged (once
			// the old primary is back as the new one's replica).
			old.Restart(t)
			s.WaitReplicas(t, 1, 30*time.Second)
			testkit.EventuallyNil(t, 10*time.Second, func() error { return l.Check(tctx(t, time.Second)) }, "ready after the failover")
			for i := range 3 {
				var m channellayer.Message
				var again bool
				tries := 0
				testkit.EventuallyNil(t, 10*time.Second, func() error {
					tries++
					m, again, err = record(fmt.Sprint("k", i), fmt.Sprint("stalled-", i))
					return err
				}, "a refused keyed record sent again after the failover")
				switch {
				case again && tries == 1:
					t.Errorf("k%d after the failover: recorded before (%s), but the new primary never had it", i, m.ID)
				case !again:
					if got := recv(t, l, ch); got.ID != m.ID {
						t.Errorf("got %s, want %s", got.ID, m.ID)
					}
				}
				// Else a try refused for want of replicas (a loaded
				// machine) recorded it: the sender's copy never comes.
				if _, again, err := record(fmt.Sprint("k", i), fmt.Sprint("stalled-", i)); err != nil || !again {
					t.Errorf("k%d sent a third time: again %v, %v; want the recorded one", i, again, err)
				}
			}
			texts := make(map[string]int)
			for _, d := range historyOf(t, primary.Addr(), prefix, g) {
				texts[d]++
			}
			for d, c := range texts {
				if c != 1 {
					t.Errorf("recorded %d times: %s", c, d)
				}
			}
			for i := range 3 {
				if texts[fmt.Sprintf(`{"type":"chat","text":"stalled-%d"}`, i)] != 1 {
					t.Errorf("stalled-%d is not in the new primary's history once: %v", i, texts)
				}
			}
			silent(t, l, ch)
		})
	}
}

// TestRedisReplicasKeyedResend: a keyed record the replicas do not confirm
// in time fails with ErrUnavailable though the primary keeps it; sent
// again, from another process, while they still lag it fails again (that
// process's WAIT covers the first record); once they catch up, sent again
// it returns the recorded message (its ID, its body) and records nothing:
// one copy in history. The recording layer never delivers it (its sender
// was refused), the other delivers it once, and both deliver what comes
// next.
func TestRedisReplicasKeyedResend(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 1})
	prefix := newPrefix()
	opts := channellayer.RedisOptions{Replicas: 1, ReplicaTimeout: time.Second}
	a := openRedisLayer(t, newFailoverClient(t, s), prefix, opts, 10*time.Second)
	b := openRedisLayer(t, newFailoverClient(t, s), prefix, opts, 10*time.Second)
	const g = "resend"
	cha, chb := newChan(t, a, g), newChan(t, b, g)
	send := func(l *channellayer.Redis, key, txt string) (channellayer.Message, bool, error) {
		return l.GroupSendRecordedOnce(tctx(t, 5*time.Second), g, key, mustMsg(t, "chat", map[string]string{"text": txt}))
	}
	// Retried on a loaded machine, as above.
	warm := 0
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		warm++
		_, _, err := send(a, fmt.Sprint("warm-", warm), "warm")
		return err
	}, "a keyed record confirmed")
	for {
		if m := recv(t, b, chb); text(t, m) == "warm" && recv(t, a, cha).ID == m.ID {
			break
		}
	}
	silent(t, a, cha)

	replica := s.Nodes()[1]
	replica.Pause()
	resumed := false
	defer func() {
		if !resumed {
			replica.Resume()
		}
	}()
	if _, _, err := send(a, "c1", "hello"); !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("keyed record with the replica stalled: %v, want ErrUnavailable", err)
	}
	hist := historyOf(t, s.Nodes()[0].Addr(), prefix, g)
	var id string
	for hid, d := range hist {
		if strings.Contains(d, `"text":"hello"`) {
			id = hid
		}
	}
	if id == "" {
		t.Fatalf("the refused record is not on the primary: %v", hist)
	}
	if m, again, err := send(b, "c1", "hello"); !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("sent again from the other process with the replica still stalled: %s, again %v, %v; want ErrUnavailable", m.Body, again, err)
	}
	replica.Resume()
	resumed = true
	var m channellayer.Message
	var again bool
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		var err error
		m, again, err = send(b, "c1", "hello")
		return err
	}, "sent again once the replica is back")
	if !again || m.ID != id || text(t, m) != "hello" || !strings.HasPrefix(string(m.Body), `{"id":"`+id+`"`) {
		t.Fatalf("sent again: %s (again %v), want the recorded %s", m.Body, again, id)
	}
	if _, again, err := send(a, "c1", "hello"); err != nil || !again {
		t.Fatalf("sent again from the recording process: again %v, %v; want the recorded one", again, err)
	}
	n := 0
	for _, d := range historyOf(t, s.Nodes()[0].Addr(), prefix, g) {
		if strings.Contains(d, `"text":"hello"`) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the history holds %d copies, want 1", n)
	}
	if got := recv(t, b, chb); got.ID != id {
		t.Fatalf("the other process delivered %s (%s), want the published record %s", got.ID, got.Body, id)
	}
	next, again, err := send(a, "c2", "next")
	if err != nil || again {
		t.Fatalf("the next keyed record: again %v, %v", again, err)
	}
	for _, tc := range []struct {
		l  *channellayer.Redis
		ch string
	}{{a, cha}, {b, chb}} {
		if got := recv(t, tc.l, tc.ch); got.ID != next.ID {
			t.Fatalf("delivered %s (%s), want only the next record %s", got.ID, got.Body, next.ID)
		}
		silent(t, tc.l, tc.ch)
	}
}
