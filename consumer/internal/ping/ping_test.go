package ping_test

import (
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
	p := ping.New(8 * time.Millisecond)
	const n = 5
	var entries [n]ping.Entry
	var counts [n]atomic.Int64
	for i := range entries {
		p.Add(&entries[i], func() bool {
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
	p := ping.New(4 * time.Millisecond)
	var e ping.Entry
	var tries atomic.Int64
	p.Add(&e, func() bool { tries.Add(1); return false })
	eventually(t, 10*time.Second, "retried", func() bool { return tries.Load() >= 3 })
	p.Remove(&e)
}
