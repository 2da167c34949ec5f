package presence

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// failingRefresh is a Memory layer whose TrackAll fails while failing is set.
type failingRefresh struct {
	*channellayer.Memory
	failing atomic.Bool
}

func (f *failingRefresh) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	if f.failing.Load() {
		return errors.New("injected TrackAll failure")
	}
	return f.Memory.TrackAll(ctx, groups, ttl)
}

// trackBobThenAda tracks bob on b, then ada on a, in "room", and returns
// their channels.
func trackBobThenAda(ctx context.Context, t *testing.T, mem *channellayer.Memory, a, b *Tracker) (adaCh, bobCh string) {
	t.Helper()
	adaCh, _ = mem.NewChannel(ctx)
	bobCh, _ = mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	return adaCh, bobCh
}

// waitLeave receives diffs on channel until one has key among its leaves.
func waitLeave(ctx context.Context, t *testing.T, l channellayer.Layer, channel, key string) {
	t.Helper()
	for {
		if _, ok := nextDiff(ctx, t, l, channel).Leaves[key]; ok {
			return
		}
	}
}

// TestRefreshAfterFailureAnnouncesTheReturn: a process whose refreshes fail
// long enough for its entry to expire sees it swept and announced as a
// leave everywhere; when a refresh works again and writes the entry back,
// the other processes are told, and announce the key's return. Without
// that, they would list the group without it for as long as nothing else
// changed there.
func TestRefreshAfterFailureAnnouncesTheReturn(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	flaky := &failingRefresh{Memory: mem}
	opts := Options{TTL: 600 * time.Millisecond, Interval: 50 * time.Millisecond}
	aOpts, logs := withLogs(opts)
	a := newTracker(t, ctx, flaky, aOpts)
	b := newTracker(t, ctx, mem, opts)

	_, bobCh := trackBobThenAda(ctx, t, mem, a, b)
	waitJoin(ctx, t, mem, bobCh, "room", "ada")

	flaky.failing.Store(true) // ada's entry is no longer refreshed: it expires
	waitLeave(ctx, t, mem, bobCh, "ada")
	testkit.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "refreshing entries failed")
	}, "a failed refresh logged")

	flaky.failing.Store(false) // the next refresh writes ada back
	for {
		m, err := mem.Receive(ctx, bobCh)
		if err != nil {
			t.Fatalf("waiting for ada's return: %v", err)
		}
		var d Diff
		if m.Type != DiffType || m.Decode(&d) != nil {
			t.Fatalf("got %s %s, want a %s", m.Type, m.Body, DiffType)
		}
		_, joined := d.Joins["ada"]
		_, left := d.Leaves["ada"]
		if joined && !left && d.Count == 2 {
			break
		}
	}
	list, err := b.List(ctx, "room")
	if err != nil || len(list) != 2 {
		t.Fatalf("b lists %+v, %v; want ada and bob", list, err)
	}
}

// lateRefresh is a Memory layer that never finds an entry expired
// (SweepAll and ExpireAll remove nothing, as when the process that would
// have swept dies first) and whose TrackAll waits, while hold is set,
// until gate is closed.
type lateRefresh struct {
	*channellayer.Memory
	hold atomic.Bool
	gate chan struct{}
}

func (l *lateRefresh) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	if l.hold.Load() {
		select {
		case <-l.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return l.Memory.TrackAll(ctx, groups, ttl)
}

func (l *lateRefresh) SweepAll(ctx context.Context, groups []string) (map[string]channellayer.Swept, error) {
	return map[string]channellayer.Swept{}, ctx.Err()
}

func (l *lateRefresh) ExpireAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	return nil, ctx.Err()
}

// TestLateRefreshAnnouncesItsEntries: a refresh that comes after its
// entries expired (a loaded process) writes them back with no sweep in
// between to tell anyone: another process that read the group in full
// meanwhile (a repair, a group new there) lists it without them. The late
// refresh announces them, so that process lists them again at once, not at
// its next repair a few TTLs later.
func TestLateRefreshAnnouncesItsEntries(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	aLayer := &lateRefresh{Memory: mem, gate: make(chan struct{})}
	bLayer := &lateRefresh{Memory: mem}
	aOpts, logs := withLogs(Options{TTL: 600 * time.Millisecond, Interval: 50 * time.Millisecond})
	a := newTracker(t, ctx, aLayer, aOpts)
	b := newTracker(t, ctx, bLayer, Options{Interval: 50 * time.Millisecond}) // TTL 30 s: no repair read within the test
	release := sync.OnceFunc(func() { close(aLayer.gate) })
	t.Cleanup(release) // before the trackers close

	trackBobThenAda(ctx, t, mem, a, b)
	cachedKeys := func(tr *Tracker) []string {
		list, _ := tr.Cached("room")
		return keys(list)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return len(cachedKeys(b)) == 2 }, "b listing ada and bob")

	aLayer.hold.Store(true) // a's refreshes wait: ada's entry expires
	testkit.Eventually(t, 10*time.Second, func() bool {
		members, err := mem.List(ctx, "room")
		return err == nil && len(members) == 1
	}, "ada's entry expiring")
	b.rereadAll()
	testkit.Eventually(t, 10*time.Second, func() bool { return slices.Equal(cachedKeys(b), []string{"bob"}) },
		"b's full read leaving ada out")

	release() // a's late refresh writes ada back
	testkit.Eventually(t, 10*time.Second, func() bool { return len(cachedKeys(b)) == 2 }, "b listing ada again")
	if members, err := mem.List(ctx, "room"); err != nil || len(members) != 2 {
		t.Fatalf("the layer lists %v, %v; want ada and bob", members, err)
	}
	if !strings.Contains(logs.String(), "refreshed after they expired") {
		t.Errorf("no warning about the late refresh; logs:\n%s", logs.String())
	}
}
