package presence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// chunkLayer is a Memory layer that records the entries of each TrackAll
// call, can fail one of them, and can hold each call until the test lets
// it go.
type chunkLayer struct {
	*channellayer.Memory

	mu    sync.Mutex
	calls [][]channellayer.Member // the entries of each TrackAll call, by call
	fail  int                     // the call (from 1) that fails; 0: none
	// held, if set, receives each call's release channel; the call waits
	// until it is closed.
	held chan chan struct{}
}

func (c *chunkLayer) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	var entries []channellayer.Member
	for _, es := range groups {
		entries = append(entries, es...)
	}
	c.mu.Lock()
	c.calls = append(c.calls, entries)
	n, fail, held := len(c.calls), c.fail, c.held
	c.mu.Unlock()
	if held != nil {
		release := make(chan struct{})
		held <- release
		<-release
	}
	if n == fail {
		return errors.New("injected TrackAll failure")
	}
	return c.Memory.TrackAll(ctx, groups, ttl)
}

func (c *chunkLayer) recorded() [][]channellayer.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]channellayer.Member(nil), c.calls...)
}

// newChunkTracker returns a tracker on a chunkLayer with entries entries
// in 5 groups ("g0" to "g4"), whose own loop never refreshes during the
// test and whose refreshes write one chunk at a time; and the names of the
// entries by group.
func newChunkTracker(t *testing.T, entries int) (*Tracker, *chunkLayer, map[string][]string) {
	t.Helper()
	ctx := testkit.ContextWithin(t, 60*time.Second)
	mem := newMemory(t)
	l := &chunkLayer{Memory: mem}
	// The tracker's own loop never refreshes during the test (TTL/3).
	tr := newTracker(t, ctx, l, Options{TTL: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tr.parallel = 1 // the tests below follow the chunks one by one
	ids := make(map[string][]string)
	for i := range entries {
		group, id := fmt.Sprintf("g%d", i%5), fmt.Sprintf("conn-%d", i)
		if err := tr.Track(ctx, group, fmt.Sprintf("user-%d", i), id, nil); err != nil {
			t.Fatal(err)
		}
		ids[group] = append(ids[group], id)
	}
	return tr, l, ids
}

// holdRefresh starts a refresh of tr whose TrackAll calls on l wait to be
// let go: it returns where each call's release arrives, what the refresh
// reports, the release of its first call, and the IDs that call writes.
func holdRefresh(t *testing.T, tr *Tracker, l *chunkLayer) (held chan chan struct{}, refreshed chan bool, release chan struct{}, first map[string]bool) {
	t.Helper()
	held = make(chan chan struct{})
	l.mu.Lock()
	l.calls, l.held = nil, held
	l.mu.Unlock()
	refreshed = make(chan bool, 1)
	go func() { refreshed <- tr.refresh() }()
	release = testkit.Receive(t, held, 10*time.Second, "the refresh's first TrackAll")
	first = make(map[string]bool)
	for _, m := range l.recorded()[0] {
		first[m.Key] = true
	}
	return held, refreshed, release, first
}

// finishRefresh lets the rest of a held refresh go and fails the test
// unless it reports success.
func finishRefresh(t *testing.T, held chan chan struct{}, refreshed chan bool) {
	t.Helper()
	for {
		select {
		case r := <-held:
			close(r)
		case ok := <-refreshed:
			if !ok {
				t.Fatal("the refresh reported a failure")
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("the refresh did not end within 10 s")
		}
	}
}

// untrackAll removes the entries from the layer (not from the tracker),
// so that the layer holds afterwards exactly what a refresh wrote.
func untrackAll(t *testing.T, mem *channellayer.Memory, ids map[string][]string) {
	t.Helper()
	ctx := testkit.Context(t)
	for group, list := range ids {
		for _, id := range list {
			if err := mem.Untrack(ctx, group, id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// listed returns the IDs of the entries the layer holds in the groups.
func listed(t *testing.T, mem *channellayer.Memory, ids map[string][]string) map[string]bool {
	t.Helper()
	out := make(map[string]bool)
	for group := range ids {
		members, err := mem.List(testkit.Context(t), group)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			out[m.Key] = true
		}
	}
	return out
}

// TestRefreshWritesInChunks: a refresh of 2 500 entries writes them with
// TrackAll calls of at most refreshChunk entries (so three), every entry
// once; when the second call fails, the refresh reports the failure and the
// entries of the other calls are written all the same.
func TestRefreshWritesInChunks(t *testing.T) {
	const entries = 2500
	for _, fail := range []int{0, 2} {
		t.Run(fmt.Sprintf("fail%d", fail), func(t *testing.T) {
			tr, l, ids := newChunkTracker(t, entries)
			untrackAll(t, l.Memory, ids)
			l.mu.Lock()
			l.calls, l.fail = nil, fail
			l.mu.Unlock()

			if ok := tr.refresh(); ok != (fail == 0) {
				t.Fatalf("refresh reported %v, want %v", ok, fail == 0)
			}
			calls := l.recorded()
			want := (entries + refreshChunk - 1) / refreshChunk
			if len(calls) < 2 || len(calls) != want {
				t.Fatalf("%d TrackAll calls for %d entries, want %d (chunks of at most %d), more than one", len(calls), entries, want, refreshChunk)
			}
			seen := make(map[string]bool)
			for i, c := range calls {
				if len(c) == 0 || len(c) > refreshChunk {
					t.Errorf("TrackAll call %d wrote %d entries, want 1 to %d", i+1, len(c), refreshChunk)
				}
				for _, m := range c {
					if seen[m.Key] {
						t.Errorf("entry %s written twice", m.Key)
					}
					seen[m.Key] = true
				}
			}
			if len(seen) != entries {
				t.Errorf("the refresh wrote %d entries, want %d", len(seen), entries)
			}
			failed := make(map[string]bool)
			if fail > 0 {
				for _, m := range calls[fail-1] {
					failed[m.Key] = true
				}
			}
			got := listed(t, l.Memory, ids)
			if len(got) != entries-len(failed) {
				t.Errorf("the layer holds %d entries after the refresh, want %d (all but the failed chunk's %d)",
					len(got), entries-len(failed), len(failed))
			}
			for id := range got {
				if failed[id] {
					t.Errorf("entry %s of the failed chunk is in the layer", id)
				}
			}
		})
	}
}

// TestRefreshLetsLeaveInBetweenChunks: a Leave that comes while a refresh
// writes its first chunk waits for that chunk only, not for the whole
// refresh; and the entry that left is not written back by a later chunk
// that had it in the refresh's snapshot.
func TestRefreshLetsLeaveInBetweenChunks(t *testing.T) {
	const entries = 3500 // four chunks
	tr, l, ids := newChunkTracker(t, entries)
	held, refreshed, release, first := holdRefresh(t, tr, l)
	var group, id string // an entry of a later chunk
	for g, list := range ids {
		for _, i := range list {
			if !first[i] {
				group, id = g, i
			}
		}
	}
	left := make(chan error, 1)
	go func() { left <- tr.Leave(context.Background(), group, id, 0, false) }()
	testkit.Eventually(t, 10*time.Second, func() bool {
		for _, g := range testkit.Goroutines() {
			if g.In("presence.(*Tracker).Leave") && g.LockWait() {
				return true
			}
		}
		return false
	}, "the Leave waiting for the chunk being written")

	// Let the chunk being written go, and no other: the Leave, waiting
	// for it, must be done without any later chunk being let go (the
	// next one waits for the Leave, held or not yet started).
	close(release)
	if err := testkit.Receive(t, left, 10*time.Second, "the Leave, after the one chunk it waited for"); err != nil {
		t.Fatal(err)
	}
	// The rest of the refresh, if any chunk remains.
	finishRefresh(t, held, refreshed)
	if got := listed(t, l.Memory, ids); got[id] {
		t.Fatalf("entry %s of %s is in the layer after it left: the refresh wrote it back", id, group)
	}
}

// TestRefreshSkipsEntriesGoneSinceItsSnapshot: an entry that is no longer
// tracked when its chunk's turn comes (it left while an earlier chunk was
// written) is not written, though the refresh listed it at its start.
func TestRefreshSkipsEntriesGoneSinceItsSnapshot(t *testing.T) {
	const entries = 2500
	tr, l, ids := newChunkTracker(t, entries)
	untrackAll(t, l.Memory, ids)
	held, refreshed, release, first := holdRefresh(t, tr, l)
	gone := make(map[string]bool) // an entry of each group not in the first chunk
	for group, list := range ids {
		for _, id := range list {
			if !first[id] {
				// What a Leave does while the first chunk is written: it
				// forgets the entry here (and removes it from the layer,
				// where untrackAll already did).
				if tr.forget(group, id) == nil {
					t.Fatalf("%s was not tracked", id)
				}
				gone[id] = true
				break
			}
		}
	}
	if len(gone) == 0 {
		t.Fatalf("the first TrackAll wrote all %d entries, want at most %d", len(first), refreshChunk)
	}
	close(release)
	finishRefresh(t, held, refreshed)
	got := listed(t, l.Memory, ids)
	for id := range gone {
		if got[id] {
			t.Errorf("entry %s is in the layer: the refresh wrote it back after it left", id)
		}
	}
	if len(got) != entries-len(gone) {
		t.Errorf("the layer holds %d entries, want %d", len(got), entries-len(gone))
	}
}

// TestRefreshDoesNotHoldDiffs: while a refresh waits on a slow layer, the
// tracker's diffs go on (the refresh runs beside them, not in their loop).
func TestRefreshDoesNotHoldDiffs(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	l := &chunkLayer{Memory: mem, held: make(chan chan struct{}, 1)}
	tr, err := New(ctx, l, Options{TTL: 300 * time.Millisecond, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	adaCh, _ := mem.NewChannel(ctx)
	if err := tr.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	release := testkit.Receive(t, l.held, 10*time.Second, "a refresh's TrackAll")
	defer func() { // the tracker closes after the refresh is let go
		close(release)
		go func() { // later refreshes are let go at once
			for r := range l.held {
				close(r)
			}
		}()
		_ = tr.Close(context.Background())
		close(l.held)
	}()
	bobCh, _ := mem.NewChannel(ctx)
	if err := tr.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	waitJoin(ctx, t, mem, adaCh, "room", "bob") // while the refresh is held
}

// TestRefreshRetriesOnlyTheFailedChunk: a refresh reports the entries of
// the chunk that failed, and the retry (at the next tick) writes those
// alone, in one call: an overloaded layer is not asked for every chunk
// again each second.
func TestRefreshRetriesOnlyTheFailedChunk(t *testing.T) {
	const entries = 2500
	tr, l, _ := newChunkTracker(t, entries)
	l.mu.Lock()
	l.calls, l.fail = nil, 2
	l.mu.Unlock()
	failed := tr.refreshRefs(nil)
	calls := l.recorded()
	if len(calls) != 3 || len(failed) != len(calls[1]) {
		t.Fatalf("%d calls, %d entries reported failed; want 3 calls and the second call's %d", len(calls), len(failed), len(calls[1]))
	}
	inFailed := make(map[string]bool)
	for _, m := range calls[1] {
		inFailed[m.Key] = true
	}
	for _, r := range failed {
		if !inFailed[r.id] {
			t.Fatalf("entry %s reported failed, but its chunk was written", r.id)
		}
	}
	l.mu.Lock()
	l.calls, l.fail = nil, 0
	l.mu.Unlock()
	if again := tr.refreshRefs(failed); len(again) != 0 {
		t.Fatalf("the retry reported %d entries failed, want none", len(again))
	}
	if calls := l.recorded(); len(calls) != 1 || len(calls[0]) != len(failed) {
		t.Fatalf("the retry made %d calls (first of %d entries), want one of the %d failed entries", len(calls), len(calls[0]), len(failed))
	}
}

// TestRefreshWritesChunksInParallel: a refresh has up to refreshParallel
// chunks in flight at a time, not one after the other: on a busy process
// each call waits for a connection and the CPU, and waits one after the
// other could outlast the entries' TTL.
func TestRefreshWritesChunksInParallel(t *testing.T) {
	const entries = 6500 // seven chunks
	tr, l, _ := newChunkTracker(t, entries)
	tr.parallel = refreshParallel
	held := make(chan chan struct{}, 16)
	l.mu.Lock()
	l.calls, l.held = nil, held
	l.mu.Unlock()
	done := make(chan []entryRef, 1)
	go func() { done <- tr.refreshRefs(nil) }()
	var releases []chan struct{}
	for range refreshParallel {
		releases = append(releases, testkit.Receive(t, held, 10*time.Second, "a chunk in flight"))
	}
	select {
	case r := <-held:
		t.Fatalf("chunk %d started while %d were in flight", refreshParallel+1, refreshParallel)
		close(r)
	case <-time.After(100 * time.Millisecond):
	}
	for _, r := range releases {
		close(r)
	}
	for {
		select {
		case r := <-held:
			close(r)
		case failed := <-done:
			if len(failed) != 0 {
				t.Fatalf("%d entries failed", len(failed))
			}
			if calls := l.recorded(); len(calls) != 7 {
				t.Fatalf("%d TrackAll calls, want 7", len(calls))
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("the refresh did not end")
		}
	}
}

// TestRefreshGoesInTurns: the entries are refreshed a share at a tick,
// each within TTL/3, not all in one write (which on Redis holds the one
// server's thread for every entry of the process at once).
func TestRefreshGoesInTurns(t *testing.T) {
	const entries = 400
	ctx := testkit.ContextWithin(t, 60*time.Second)
	l := &chunkLayer{Memory: newMemory(t)}
	// TTL/3 is 2 s in 40 turns of 50 ms.
	tr := newTracker(t, ctx, l, Options{TTL: 6 * time.Second, Interval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if got := tr.refreshTurns(); got != 40 {
		t.Fatalf("refreshTurns() = %d, want 40", got)
	}
	for i := range entries {
		if err := tr.Track(ctx, fmt.Sprintf("g%d", i%100), fmt.Sprintf("user-%d", i), fmt.Sprintf("conn-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Every entry refreshed once (TTL/3 after its Track at the latest,
	// give or take a loaded machine).
	var calls [][]channellayer.Member
	testkit.Eventually(t, 10*time.Second, func() bool {
		calls = l.recorded()
		seen := make(map[string]bool)
		for _, c := range calls {
			for _, m := range c {
				seen[m.Key] = true
			}
		}
		return len(seen) == entries
	}, "every entry refreshed")
	biggest := 0
	for _, c := range calls {
		biggest = max(biggest, len(c))
	}
	if len(calls) < 5 || biggest >= entries {
		t.Errorf("the first round of refreshes wrote %d entries in %d calls, at most %d in one; want them spread over the turns", entries, len(calls), biggest)
	}
}

// TestWriteBackGroupsRuns: writeBack writes each group's entries once under
// the group, whether its refs come in one run or in several (a retry's).
func TestWriteBackGroupsRuns(t *testing.T) {
	tr, l, _ := newChunkTracker(t, 10) // conn-i in group g(i%5)
	l.mu.Lock()
	l.calls = nil
	l.mu.Unlock()
	refs := []entryRef{{"g0", "conn-0"}, {"g0", "conn-5"}, {"g1", "conn-1"}, {"g0", "conn-5"}, {"g2", "gone"}, {"g2", "conn-2"}}
	written, _, err := tr.writeBack(refs)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(ms []channellayer.Member) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Key)
		}
		return out
	}
	want := map[string][]string{"g0": {"conn-0", "conn-5", "conn-5"}, "g1": {"conn-1"}, "g2": {"conn-2"}}
	if len(written) != len(want) {
		t.Fatalf("written %v, want groups %v", written, want)
	}
	for g, ids := range want {
		if got := keys(written[g]); !slices.Equal(got, ids) {
			t.Errorf("written[%s] = %v, want %v", g, got, ids)
		}
	}
	if calls := l.recorded(); len(calls) != 1 || len(calls[0]) != 5 {
		t.Errorf("TrackAll calls %v, want one of 5 entries", calls)
	}
}
