package presence

import (
	"context"
	"errors"
	"strings"
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

	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
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
