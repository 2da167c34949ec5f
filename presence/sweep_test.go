package presence

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// countingSweeps is a Memory layer that counts, per group, the sweeps
// (ExpireAll) that took it, and the sweeps in all.
type countingSweeps struct {
	*channellayer.Memory
	mu     sync.Mutex
	calls  int
	groups map[string]int
}

func (c *countingSweeps) ExpireAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	c.mu.Lock()
	c.calls++
	for _, g := range groups {
		c.groups[g]++
	}
	c.mu.Unlock()
	return c.Memory.ExpireAll(ctx, groups)
}

// A tracker sweeps each group every sweepEvery ticks (a tenth of the TTL),
// not every tick, each group at a tick of its own; a dead process's
// entries are still gone within TTL and sweepEvery ticks.
func TestSweepsTakeTurns(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &countingSweeps{Memory: mem, groups: map[string]int{}}
	const interval, ttl = 20 * time.Millisecond, 600 * time.Millisecond // sweepEvery 3
	a := newTracker(t, ctx, counting, Options{TTL: ttl, Interval: interval})
	if every := a.sweepEvery(); every != 3 {
		t.Fatalf("sweepEvery = %d, want 3 (a tenth of the TTL, in ticks)", every)
	}
	const groups = 60
	for i := range groups {
		ch, _ := mem.NewChannel(ctx)
		if err := a.Track(ctx, fmt.Sprint("room-", i), "ada", ch, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A dead process's entry in room-0, and someone there to hear of it.
	if err := mem.Track(ctx, "room-0", "ghost-1", []byte(`{"v":2,"k":"ghost","t":1}`), ttl); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		ms, err := mem.List(ctx, "room-0")
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Key == "ghost-1" {
				return fmt.Errorf("the dead entry is still listed")
			}
		}
		return nil
	}, "the dead entry swept")
	if took, most := time.Since(start), ttl+3*interval+time.Second; took > most {
		t.Errorf("the dead entry was gone %v after it was written, want within %v", took, most)
	}
	counting.mu.Lock()
	calls := counting.calls
	counts := make(map[string]int, len(counting.groups))
	for g, n := range counting.groups {
		counts[g] = n
	}
	counting.mu.Unlock()
	if calls < 15 {
		t.Fatalf("%d sweeps, want at least 15 to judge", calls)
	}
	total := 0
	for i := range groups {
		n := counts[fmt.Sprint("room-", i)]
		total += n
		// Each group every third sweep: calls/3, give or take the first
		// and the last.
		if n < calls/3-1 || n > calls/3+2 {
			t.Errorf("room-%d swept %d times in %d sweeps, want about %d", i, n, calls, calls/3)
		}
	}
	if total > groups*calls/2 {
		t.Errorf("%d group sweeps in %d sweeps of %d groups: want about a third of them", total, calls, groups)
	}
}
