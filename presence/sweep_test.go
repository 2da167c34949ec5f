package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// sweepCounts counts, per group, the sweeps that took it, and the sweeps in
// all.
type sweepCounts struct {
	mu      sync.Mutex
	calls   int
	groups  map[string]int
	removed map[string]time.Time // when a sweep removed each entry
}

func (c *sweepCounts) count(groups []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	for _, g := range groups {
		c.groups[g]++
	}
}

func (c *sweepCounts) removedAt(expired map[string][]channellayer.Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ms := range expired {
		for _, m := range ms {
			if c.removed == nil {
				c.removed = make(map[string]time.Time)
			}
			c.removed[m.Key] = time.Now()
		}
	}
}

// waitRemoved waits until a sweep removed the entry key and returns when.
func (c *sweepCounts) waitRemoved(t *testing.T, key string) time.Time {
	t.Helper()
	var at time.Time
	testkit.Eventually(t, 10*time.Second, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		at = c.removed[key]
		return !at.IsZero()
	}, "the dead entry swept")
	return at
}

func (c *sweepCounts) read() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := make(map[string]int, len(c.groups))
	for g, n := range c.groups {
		counts[g] = n
	}
	return c.calls, counts
}

// countingSweeps is a Memory layer that counts its sweeps (SweepAll).
type countingSweeps struct {
	*channellayer.Memory
	sweepCounts
}

func (c *countingSweeps) SweepAll(ctx context.Context, groups []string) (map[string]channellayer.Swept, error) {
	c.count(groups)
	return c.sweepAll(ctx, c.Memory, groups)
}

// sweepAll sweeps groups on mem and records when it removed each entry.
func (c *sweepCounts) sweepAll(ctx context.Context, mem *channellayer.Memory, groups []string) (map[string]channellayer.Swept, error) {
	out, err := mem.SweepAll(ctx, groups)
	expired := make(map[string][]channellayer.Member)
	for g, sw := range out {
		expired[g] = sw.Expired
	}
	c.removedAt(expired)
	return out, err
}

// expiringOnly is a Memory layer that does not tell when entries expire
// (no SweepAll) and counts its sweeps (ExpireAll).
type expiringOnly struct {
	channellayer.Layer
	channellayer.Presence
	mem *channellayer.Memory
	sweepCounts
}

func (e *expiringOnly) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	return e.mem.TrackAll(ctx, groups, ttl)
}

func (e *expiringOnly) ExpireAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	e.count(groups)
	out, err := e.mem.ExpireAll(ctx, groups)
	e.removedAt(out)
	return out, err
}

var _ channellayer.PresenceRefresher = (*expiringOnly)(nil)

// trackGhost tracks many groups on tr, then (after before) writes the
// entry of a dead process in the first one, and returns when it wrote it.
func trackGhost(ctx context.Context, t *testing.T, mem *channellayer.Memory, tr *Tracker, groups int, ttl time.Duration, before func()) time.Time {
	t.Helper()
	for i := range groups {
		ch, _ := mem.NewChannel(ctx)
		if err := tr.Track(ctx, fmt.Sprint("room-", i), "ada", ch, nil); err != nil {
			t.Fatal(err)
		}
	}
	before()
	written := time.Now()
	if err := mem.Track(ctx, "room-0", "ghost-1", []byte(`{"v":2,"k":"ghost","t":1}`), ttl); err != nil {
		t.Fatal(err)
	}
	return written
}

// Where the layer tells when a group's next entry expires, a tracker sweeps
// a group when something there can have expired: while its entries are
// refreshed, about once per two thirds of the TTL, not every few ticks; and
// a dead process's entry goes within a few ticks of its expiry, sooner than
// a TTL after the group's last sweep.
func TestSweepsWhenEntriesExpire(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &countingSweeps{Memory: mem, sweepCounts: sweepCounts{groups: map[string]int{}}}
	const interval, ttl = 20 * time.Millisecond, 1200 * time.Millisecond
	a := newTracker(t, ctx, counting, Options{TTL: ttl, Interval: interval})
	const groups = 60
	// The ghost comes half a TTL after room-0's first sweep: were the next
	// sweeps a TTL apart, the second would come half a TTL after the
	// ghost expired.
	written := trackGhost(ctx, t, mem, a, groups, ttl, func() {
		testkit.Eventually(t, 10*time.Second, func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return !a.groups["room-0"].sweepAt.IsZero()
		}, "room-0 swept once")
		time.Sleep(ttl / 2)
	})
	if took, most := counting.waitRemoved(t, "ghost-1").Sub(written), ttl+400*time.Millisecond; took > most {
		t.Errorf("the dead entry was gone %v after it was written, want within %v (its TTL and a few ticks)", took, most)
	}
	// Let the refreshes go on a while: the groups' next expiries keep
	// moving ahead of the sweeps.
	start := time.Now()
	time.Sleep(3 * ttl) // a stretch of time to count sweeps over, not a wait for an outcome
	elapsed := time.Since(start) + ttl
	calls, counts := counting.read()
	// At most one sweep per group per two thirds of the TTL (the refresh
	// comes every third), and the first one, and the ghost's.
	most := int(elapsed/(2*ttl/3)) + 3
	for i := range groups {
		if n := counts[fmt.Sprint("room-", i)]; n < 1 || n > most {
			t.Errorf("room-%d swept %d times in %v, want 1 to %d", i, n, elapsed.Round(time.Millisecond), most)
		}
	}
	// The groups are refreshed in turns, so their sweeps come at different
	// ticks (about one tick in four here); but not every tick sweeps.
	if ticks := int(elapsed / interval); calls > ticks/2 {
		t.Errorf("%d sweeps in about %d ticks: want a sweep only when a group's next entry expires", calls, ticks)
	}
}

// A grace period shorter than the sweep's wait: the tracker that leaves
// tells the others when the entry is due, and another process's tracker
// (the leaving one has no entry left there) sweeps it then.
func TestGraceLeaveIsSweptWhenDue(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	const interval, ttl, grace = 20 * time.Millisecond, 5 * time.Second, 300 * time.Millisecond
	counting := &countingReads{Memory: mem}
	a := newTracker(t, ctx, counting, Options{TTL: ttl, Interval: interval})
	b := newTracker(t, ctx, mem, Options{TTL: ttl, Interval: interval})
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	waitJoin(ctx, t, mem, adaCh, "room", "bob")
	// a's first sweep has found the next expiry a TTL away.
	testkit.Eventually(t, 10*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		g := a.groups["room"]
		return g != nil && time.Until(g.sweepAt) > ttl/2
	}, "the room's next sweep set from its next expiry")
	left := time.Now()
	reads := counting.reads.Load()
	if err := b.Leave(ctx, "room", bobCh, grace, false); err != nil {
		t.Fatal(err)
	}
	waitLeave(ctx, t, mem, adaCh, "bob")
	if took, most := time.Since(left), grace+time.Second; took > most {
		t.Errorf("bob's leave came %v after it began, want within %v (the grace period and a little)", took, most)
	}
	if got := counting.reads.Load(); got != reads {
		t.Errorf("the signal of the due sweep made the other process read %d groups, want none", got-reads)
	}
}

// Where the layer does not tell when entries expire, a tracker sweeps each
// group every sweepEvery ticks (a tenth of the TTL), not every tick, each
// group at a tick of its own; a dead process's entries are still gone
// within TTL and sweepEvery ticks.
func TestSweepsTakeTurns(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &expiringOnly{Layer: mem, Presence: mem, mem: mem, sweepCounts: sweepCounts{groups: map[string]int{}}}
	const interval, ttl = 20 * time.Millisecond, 600 * time.Millisecond // sweepEvery 3
	a := newTracker(t, ctx, counting, Options{TTL: ttl, Interval: interval})
	if every := a.sweepEvery(); every != 3 {
		t.Fatalf("sweepEvery = %d, want 3 (a tenth of the TTL, in ticks)", every)
	}
	const groups = 60
	written := trackGhost(ctx, t, mem, a, groups, ttl, func() {})
	if took, most := counting.waitRemoved(t, "ghost-1").Sub(written), ttl+3*interval+time.Second; took > most {
		t.Errorf("the dead entry was gone %v after it was written, want within %v", took, most)
	}
	calls, counts := counting.read()
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

// failingSweep is a Memory layer whose SweepAll fails every call that
// takes the group bad; it records the groups of the calls that failed, of
// those that did not, and the most groups one call took.
type failingSweep struct {
	*channellayer.Memory
	sweepCounts
	bad      string
	most     int
	failedIn map[string]bool
	sweptIn  map[string]bool
}

func (f *failingSweep) SweepAll(ctx context.Context, groups []string) (map[string]channellayer.Swept, error) {
	f.mu.Lock()
	f.most = max(f.most, len(groups))
	fail := slices.Contains(groups, f.bad)
	in := f.sweptIn
	if fail {
		in = f.failedIn
	}
	for _, g := range groups {
		in[g] = true
	}
	f.mu.Unlock()
	if fail {
		return nil, errors.New("injected SweepAll failure")
	}
	return f.sweepAll(ctx, f.Memory, groups)
}

// TestSweepGoesInChunks: a sweep of many groups takes them sweepChunk per
// call, and a call that fails keeps only its own groups' expired entries
// from going: after a node's death every group is due at about the same
// time, and one call for all of them failed as a whole on a loaded layer.
func TestSweepGoesInChunks(t *testing.T) {
	const groups = 3*sweepChunk + 10
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	layer := &failingSweep{Memory: mem, bad: "room-0", failedIn: make(map[string]bool), sweptIn: make(map[string]bool)}
	tr := newTracker(t, ctx, layer, Options{Interval: 20 * time.Millisecond})
	// A dead process's entry in every group, expired at once, there before
	// the tracker's first sweep of the group (a later one would wait for
	// the group's next expiry, a TTL away).
	for i := range groups {
		if err := mem.Track(ctx, fmt.Sprint("room-", i), fmt.Sprint("ghost-", i), []byte(`{"v":2,"k":"ghost","t":1}`), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	for i := range groups {
		ch, _ := mem.NewChannel(ctx)
		if err := tr.Track(ctx, fmt.Sprint("room-", i), "ada", ch, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Every call with room-0 fails: the dead entries of the groups that
	// no such call took go all the same. A group a failed call took is
	// swept again a few ticks later, maybe in a chunk without room-0 (the
	// groups due are taken in no set order), so the groups that never
	// went are those of the last failing call: room-0's chunk.
	never := func() []string {
		var gs []string
		for g := range layer.failedIn {
			if !layer.sweptIn[g] {
				gs = append(gs, g)
			}
		}
		return gs
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		layer.mu.Lock()
		defer layer.mu.Unlock()
		for i := range groups {
			if g := fmt.Sprint("room-", i); !layer.failedIn[g] && !layer.sweptIn[g] {
				return false // not taken yet
			}
		}
		return len(layer.failedIn) > 0 && len(layer.removed) == len(layer.sweptIn)
	}, "every group taken, and the dead entry of every group a call swept gone")
	layer.mu.Lock()
	defer layer.mu.Unlock()
	if layer.most > sweepChunk {
		t.Errorf("a SweepAll call took %d groups, want at most %d", layer.most, sweepChunk)
	}
	if layer.sweptIn[layer.bad] {
		t.Fatalf("a SweepAll call with %s did not fail", layer.bad)
	}
	if n := len(never()); n > sweepChunk {
		t.Errorf("%d groups never swept, want at most one chunk (%d): a failing call held back more than its own", n, sweepChunk)
	}
	for _, g := range never() {
		if _, ok := layer.removed["ghost-"+strings.TrimPrefix(g, "room-")]; ok {
			t.Errorf("the dead entry of %s swept, though every call that took it failed", g)
		}
	}
}

// A person whose process died and who is back on another process before
// the dead entry is swept is no leave, even where the new entry's own
// signal has not arrived yet (it waits in line on its process): the
// sweep's signal carries the key's live entries. Here the new entry is
// written to the layer with no signal at all.
func TestSweepKeepsAKeyThatCameBack(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	layer := &leaveInWindow{countingSweeps: countingSweeps{Memory: mem, sweepCounts: sweepCounts{groups: map[string]int{}}}}
	a, adaCh := sweepAfterReturn(ctx, t, mem, layer)
	if keys := cachedKeys(a, "room"); !slices.Equal(keys, []string{"ada", "bob"}) {
		t.Errorf("after the sweep a lists %q, want ada and bob (bob-2 is live)", keys)
	}
	// Whatever diffs ada got up to cy's join, none says bob left.
	b := newTracker(t, ctx, mem, Options{TTL: 5 * time.Second, Interval: 20 * time.Millisecond})
	cyCh, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "cy", cyCh, nil); err != nil {
		t.Fatal(err)
	}
	noLeaveUntilJoin(ctx, t, mem, adaCh, "bob", "cy")
}

// An entry the sweep's signal carries as live, but that leaves between
// the sweep's read and its signal (its own gone signal could go out in
// between, and the sweep's would list it again), is signalled gone once
// more after a second read: nobody keeps listing it.
func TestSweepConfirmsWhatItKept(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	layer := &leaveInWindow{countingSweeps: countingSweeps{Memory: mem, sweepCounts: sweepCounts{groups: map[string]int{}}}}
	layer.leave.Store(true) // bob-2 leaves right after the sweep's read
	a, adaCh := sweepAfterReturn(ctx, t, mem, layer)
	waitLeave(ctx, t, mem, adaCh, "bob")
	testkit.Eventually(t, 10*time.Second, func() bool {
		return slices.Equal(cachedKeys(a, "room"), []string{"ada"})
	}, "bob no longer listed")
}

// The same when the person came back on the sweeping process itself: its
// view has the new entry at once, but the entry's signal may still wait
// in its outbox, so it does not tell the others of it.
func TestSweepKeepsAKeyBackOnTheSweeper(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &countingSweeps{Memory: mem, sweepCounts: sweepCounts{groups: map[string]int{}}}
	opts := Options{TTL: 5 * time.Second, Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, counting, opts)
	b := newTracker(t, ctx, noSweeps{mem}, opts) // only a sweeps
	if err := mem.Track(ctx, "room", "ghost-1", []byte(`{"v":2,"k":"bob","t":1}`), 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	cyCh, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "cy", cyCh, nil); err != nil {
		t.Fatal(err)
	}
	adaCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	waitJoin(ctx, t, mem, cyCh, "room", "ada")
	// bob back on a, its signal held in a's outbox while a sends nothing.
	a.sendMu.Lock()
	held := true
	defer func() {
		if held {
			a.sendMu.Unlock()
		}
	}()
	bobCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	counting.waitRemoved(t, "ghost-1")
	waitUnlisted(t, b, "room", "ghost-1")
	if keys := cachedKeys(b, "room"); !slices.Equal(keys, []string{"ada", "bob", "cy"}) {
		t.Errorf("after the sweep b lists %q, want ada, bob and cy", keys)
	}
	held = false
	a.sendMu.Unlock()
	// Whatever diffs cy got up to dan's join, none says bob left.
	danCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "dan", danCh, nil); err != nil {
		t.Fatal(err)
	}
	noLeaveUntilJoin(ctx, t, mem, cyCh, "bob", "dan")
}

// noLeaveUntilJoin reads the diffs on channel up to the one with joined's
// join, and fails if one of them says key left.
func noLeaveUntilJoin(ctx context.Context, t *testing.T, l channellayer.Layer, channel, key, joined string) {
	t.Helper()
	for {
		d := nextDiff(ctx, t, l, channel)
		if _, left := d.Leaves[key]; left {
			t.Fatalf("%s was said to have left: %+v", key, d)
		}
		if _, ok := d.Joins[joined]; ok {
			return
		}
	}
}

// noSweeps is a Memory layer whose sweeps remove nothing.
type noSweeps struct{ *channellayer.Memory }

func (noSweeps) SweepAll(ctx context.Context, groups []string) (map[string]channellayer.Swept, error) {
	return map[string]channellayer.Swept{}, nil
}

// leaveInWindow is a Memory layer whose next ListAll, once leave is set,
// removes bob-2 (with no signal) after it has read the groups.
type leaveInWindow struct {
	countingSweeps
	leave atomic.Bool
}

func (l *leaveInWindow) ListAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	all, err := l.Memory.ListAll(ctx, groups)
	if l.leave.CompareAndSwap(true, false) {
		if uerr := l.Memory.Untrack(ctx, "room", "bob-2"); uerr != nil {
			return nil, uerr
		}
	}
	return all, err
}

// sweepAfterReturn makes a tracker on layer that knows bob's entry on a
// dead process (ghost-1), writes bob's new entry (bob-2) with no signal,
// and returns once the tracker has swept ghost-1 and applied its signal.
func sweepAfterReturn(ctx context.Context, t *testing.T, mem *channellayer.Memory, layer *leaveInWindow) (*Tracker, string) {
	t.Helper()
	// A TTL of 30 s: the group's repair read, which would mend a wrong
	// view too, comes three TTLs after its first read at the earliest,
	// long after the test's context has ended.
	a := newTracker(t, ctx, layer, Options{TTL: 30 * time.Second, Interval: 20 * time.Millisecond})
	if err := mem.Track(ctx, "room", "ghost-1", []byte(`{"v":2,"k":"bob","t":1}`), 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	adaCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if keys := cachedKeys(a, "room"); !slices.Equal(keys, []string{"ada", "bob"}) {
		t.Fatalf("a lists %q, want ada and bob", keys)
	}
	if err := mem.Track(ctx, "room", "bob-2", []byte(`{"v":2,"k":"bob","t":2}`), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	layer.waitRemoved(t, "ghost-1")
	waitUnlisted(t, a, "room", "ghost-1")
	return a, adaCh
}

// waitUnlisted waits until the entry id is gone from tr's view of group
// (the sweep's signal applied there).
func waitUnlisted(t *testing.T, tr *Tracker, group, id string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return !slices.ContainsFunc(tr.groups[group].live.es, func(e liveEntry) bool { return e.id == idHash(id) })
	}, id+" gone from the view")
}

// cachedKeys lists the keys of the tracker's view of group.
func cachedKeys(tr *Tracker, group string) []string {
	list, _ := tr.Cached(group)
	keys := make([]string, len(list))
	for i, p := range list {
		keys[i] = p.Key
	}
	return keys
}
