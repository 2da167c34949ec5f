package ping_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/consumer/internal/ping"
)

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Every entry is pinged again and again; one whose ping has not ended is
// skipped; a removed one is pinged no more, and the others go on.
func TestPingsEveryEntry(t *testing.T) {
	p := ping.New(8*time.Millisecond, 4*time.Millisecond)
	const n = 5
	var entries [n]ping.Entry
	var counts [n]atomic.Int64
	for i := range entries {
		p.Add(&entries[i], func(check bool) bool {
			if check {
				t.Error("a ping that did not await was checked")
				return true
			}
			counts[i].Add(1)
			if i != 0 { // entry 0's ping never ends
				entries[i].Done()
			}
			return true
		})
	}
	eventually(t, 10*time.Second, "every entry pinged 3 times", func() bool {
		for i := 1; i < n; i++ {
			if counts[i].Load() < 3 {
				return false
			}
		}
		return true
	})
	if c := counts[0].Load(); c != 1 {
		t.Fatalf("an entry whose ping did not end was pinged %d times, want 1", c)
	}
	p.Remove(&entries[2])
	after := counts[2].Load()
	base := counts[4].Load()
	eventually(t, 10*time.Second, "the others pinged on", func() bool { return counts[4].Load() >= base+3 })
	if c := counts[2].Load(); c != after {
		t.Fatalf("a removed entry was pinged %d more times", c-after)
	}
	for _, i := range []int{0, 1, 3, 4} {
		p.Remove(&entries[i])
	}
}

// A ping that could not start does not count as waiting for its pong.
func TestStartFailureRetries(t *testing.T) {
	p := ping.New(4*time.Millisecond, 2*time.Millisecond)
	var e ping.Entry
	var tries atomic.Int64
	p.Add(&e, func(check bool) bool {
		if check {
			t.Error("a ping that did not start was checked")
			return true
		}
		tries.Add(1)
		return false
	})
	eventually(t, 10*time.Second, "retried", func() bool { return tries.Load() >= 3 })
	p.Remove(&e)
}

// An awaited ping is checked by the pinger about timeout after it started:
// answered, the entry is pinged again; not answered, it is pinged no more.
func TestAwaitedPingIsChecked(t *testing.T) {
	const interval, timeout = 64 * time.Millisecond, 32 * time.Millisecond
	p := ping.New(interval, timeout)
	type rec struct {
		pings, checks atomic.Int64
		answer        atomic.Bool
		lastPing      atomic.Int64 // Unix ns
		minLag        atomic.Int64 // shortest time from a ping to its check
	}
	var es [2]ping.Entry
	var rs [2]rec
	for i := range es {
		rs[i].minLag.Store(int64(time.Hour))
		rs[i].answer.Store(i == 0)
		p.Add(&es[i], func(check bool) bool {
			r := &rs[i]
			if !check {
				r.pings.Add(1)
				r.lastPing.Store(time.Now().UnixNano())
				es[i].Await()
				return true
			}
			r.checks.Add(1)
			if lag := time.Now().UnixNano() - r.lastPing.Load(); lag < r.minLag.Load() {
				r.minLag.Store(lag)
			}
			return r.answer.Load()
		})
	}
	eventually(t, 10*time.Second, "the answering entry pinged and checked 4 times", func() bool {
		return rs[0].pings.Load() >= 4 && rs[0].checks.Load() >= 4
	})
	if n := rs[1].checks.Load(); n != 1 || rs[1].pings.Load() != 1 {
		t.Errorf("the entry that never answered: %d pings, %d checks; want 1 of each (a failed check ends its pings)", rs[1].pings.Load(), n)
	}
	// Slots are interval/64 apart: the check comes timeout after the ping,
	// rounded up to a slot, never sooner.
	if lag := time.Duration(rs[0].minLag.Load()); lag < timeout-interval/64 {
		t.Errorf("a ping was checked %v after it started, want about %v", lag, timeout)
	}
	for i := range es {
		p.Remove(&es[i])
	}
}

// When the timeout is the whole interval (or more), an awaited ping is
// checked at its entry's next tick, before the next ping starts.
func TestCheckBeforeNextPing(t *testing.T) {
	p := ping.New(8*time.Millisecond, time.Second)
	var e ping.Entry
	var pings, checks atomic.Int64
	var order []string
	var mu sync.Mutex
	p.Add(&e, func(check bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if check {
			checks.Add(1)
			order = append(order, "check")
			return true
		}
		pings.Add(1)
		order = append(order, "ping")
		e.Await()
		return true
	})
	eventually(t, 10*time.Second, "3 pings", func() bool { return pings.Load() >= 3 })
	p.Remove(&e)
	mu.Lock()
	defer mu.Unlock()
	for i, s := range order {
		if want := [2]string{"ping", "check"}[i%2]; s != want {
			t.Fatalf("order %v: want ping and check taking turns", order)
		}
	}
}

// A connection starting or ending does not wait for the pings under way:
// they write to sockets, and a slow one (a starved process preempted in
// the middle) held up every Add and Remove while the pinger's lock was
// held for them.
func TestAddAndRemoveDoNotWaitForPings(t *testing.T) {
	p := ping.New(8*time.Millisecond, 4*time.Millisecond)
	var slow ping.Entry
	inPing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.Add(&slow, func(check bool) bool {
		once.Do(func() {
			close(inPing)
			<-release // a ping that takes its time
		})
		slow.Done()
		return true
	})
	defer p.Remove(&slow)
	<-inPing
	done := make(chan struct{})
	go func() {
		defer close(done)
		var e ping.Entry
		p.Add(&e, func(bool) bool { e.Done(); return true })
		p.Remove(&e)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		close(release)
		<-done
		t.Fatal("Add and Remove waited for a ping under way")
	}
	close(release)
}
