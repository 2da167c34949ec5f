package presence

import (
	"context"
	"encoding/json"
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

// nextDiff receives the next diff on channel.
func nextDiff(ctx context.Context, t *testing.T, l channellayer.Layer, channel string) Diff {
	t.Helper()
	m, err := l.Receive(ctx, channel)
	if err != nil {
		t.Fatalf("waiting for a diff on %s: %v", channel, err)
	}
	var d Diff
	if m.Type != DiffType || m.Decode(&d) != nil {
		t.Fatalf("got %s %s on %s, want a %s", m.Type, m.Body, channel, DiffType)
	}
	return d
}

// TestDiffsComeFromSignalsWithoutReads: once a tracker has read a group
// (at its first local entry's Track), the joins, meta updates and leaves
// of other processes reach its entries from the change signals alone: no
// List or ListAll, whatever the number of groups and changes. This is what
// keeps a reconnect storm from making every process read every room.
func TestDiffsComeFromSignalsWithoutReads(t *testing.T) {
	const groups = 50
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &countingLayer{Memory: mem}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, counting, opts)
	b := newTracker(t, ctx, mem, opts)

	names := make([]string, groups)
	ada := make([]string, groups)
	for i := range groups {
		names[i] = fmt.Sprintf("room-%02d", i)
		ada[i], _ = mem.NewChannel(ctx)
		if err := a.Track(ctx, names[i], "ada", ada[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	counting.reset(0, nil)
	bob := make([]string, groups)
	for i := range groups {
		bob[i], _ = mem.NewChannel(ctx)
		if err := b.Track(ctx, names[i], "bob", bob[i], map[string]int{"v": 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range groups {
		d := nextDiff(ctx, t, mem, ada[i])
		if metas, ok := d.Joins["bob"]; !ok || string(metas[0]) != `{"v":1}` || d.Count != 2 {
			t.Fatalf("%s: first diff %+v, want bob's join with his meta, count 2", names[i], d)
		}
	}
	for i := range groups { // a new meta for the same entry: an update
		if err := b.Track(ctx, names[i], "bob", bob[i], map[string]int{"v": 2}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range groups {
		d := nextDiff(ctx, t, mem, ada[i])
		if metas, ok := d.Updates["bob"]; !ok || len(metas) != 1 || string(metas[0]) != `{"v":2}` || len(d.Joins)+len(d.Leaves) != 0 {
			t.Fatalf("%s: diff after bob's new meta %+v, want an update only", names[i], d)
		}
	}
	for i := range groups {
		if err := b.Leave(ctx, names[i], bob[i], 0, true); err != nil {
			t.Fatal(err)
		}
	}
	for i := range groups {
		d := nextDiff(ctx, t, mem, ada[i])
		if _, ok := d.Leaves["bob"]; !ok || d.Count != 1 {
			t.Fatalf("%s: diff after bob left %+v, want his leave, count 1", names[i], d)
		}
	}
	if list, ok := a.Cached(names[0]); !ok || len(list) != 1 || list[0].Key != "ada" {
		t.Fatalf("Cached after the leaves: %v %v, want ada alone", keys(list), ok)
	}
	if lists, listAlls := counting.counts(); lists != 0 || len(listAlls) != 0 {
		t.Errorf("tracker a read the layer (%d List, ListAll %v) for changes its signals carried", lists, listAlls)
	}
}

// TestComeAndGoBetweenTwoDiffs: a key that joins and leaves within one
// Interval is in both the Joins and the Leaves of the next diff.
func TestComeAndGoBetweenTwoDiffs(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	a := newTracker(t, ctx, mem, Options{Interval: time.Hour}) // diffs only at the first change
	b := newTracker(t, ctx, mem, Options{Interval: time.Hour})
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	cidCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Track(ctx, "room", "cid", cidCh, nil); err != nil {
		t.Fatal(err)
	}
	// Diffs wait for the tick (an hour) once one went: the test flushes.
	testkit.Eventually(t, 10*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.groups["room"].live.of("cid")) == 1
	}, "cid's join applied on a")
	a.flush(true)
	waitJoin(ctx, t, mem, adaCh, "room", "cid")
	if err := b.Track(ctx, "room", "bob", bobCh, "hi"); err != nil {
		t.Fatal(err)
	}
	if err := b.Leave(ctx, "room", bobCh, 0, true); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		tc, ok := a.groups["room"].touched["bob"]
		return ok && tc.came != nil && len(a.groups["room"].live.of("bob")) == 0
	}, "bob's join and leave applied on a")
	a.flush(true)
	d := nextDiff(ctx, t, mem, adaCh)
	if j, l := d.Joins["bob"], d.Leaves["bob"]; len(j) != 1 || len(l) != 1 || string(j[0]) != `"hi"` || d.Count != 2 {
		t.Fatalf("diff %+v, want bob in the joins and the leaves with his meta, count 2", d)
	}
}

// TestRepairReadFindsWhatNoSignalTold: an entry written to the layer
// without a signal (as when a signal is lost with a Redis connection)
// reaches the group's diffs at the repair read, within two TTLs.
func TestRepairReadFindsWhatNoSignalTold(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	a := newTracker(t, ctx, mem, Options{TTL: 300 * time.Millisecond, Interval: 20 * time.Millisecond})
	adaCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	b := []byte(`{"v":2,"k":"bob","t":1}`)
	if err := mem.Track(ctx, "room", "bob-1", b, time.Minute); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitJoin(ctx, t, mem, adaCh, "room", "bob")
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the repair read found bob after %v, want within about six TTLs (1.8 s)", took)
	}
}

// failingSignals is a Memory layer whose GroupSend to signal groups fails
// while failing is set.
type failingSignals struct {
	*channellayer.Memory
	failing atomic.Bool
}

func (f *failingSignals) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	if f.failing.Load() && strings.HasPrefix(group, signalPrefix) {
		return errors.New("injected signal failure")
	}
	return f.Memory.GroupSend(ctx, group, m)
}

// TestSignalThatFailedIsSentAgain: a change whose signal could not be sent
// reaches the other processes all the same: the tracker sends it again at
// the next tick.
func TestSignalThatFailedIsSentAgain(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	flaky := &failingSignals{Memory: mem}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, mem, opts)
	bOpts, logs := withLogs(opts)
	b := newTracker(t, ctx, flaky, bOpts)
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	flaky.failing.Store(true)
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	b.sendPosted() // the signal of the Track has been tried
	if !strings.Contains(logs.String(), "signalling a change failed") {
		t.Fatalf("no warning for the failed signal; logs:\n%s", logs.String())
	}
	flaky.failing.Store(false)
	waitJoin(ctx, t, mem, adaCh, "room", "bob")
}

// countingReads is a Memory layer that counts the groups it was asked to
// list (List and ListAll).
type countingReads struct {
	*channellayer.Memory
	reads atomic.Int64
}

func (c *countingReads) List(ctx context.Context, group string) ([]channellayer.Member, error) {
	c.reads.Add(1)
	return c.Memory.List(ctx, group)
}

func (c *countingReads) ListAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	c.reads.Add(int64(len(groups)))
	return c.Memory.ListAll(ctx, groups)
}

// A signal that failed is sent again as what is true now of the entries
// it named, not as a request that every process read the group in full:
// the other processes learn of the change without a read, and an entry
// that came and went while the signals failed is not announced at all.
func TestFailedSignalIsResentNotReadInFull(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	flaky := &failingSignals{Memory: mem}
	counting := &countingReads{Memory: mem}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, counting, opts)
	b := newTracker(t, ctx, flaky, opts)
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	cidCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Track(ctx, "room", "cid", cidCh, nil); err != nil {
		t.Fatal(err)
	}
	waitJoin(ctx, t, mem, adaCh, "room", "cid")
	reads := counting.reads.Load()
	flaky.failing.Store(true)
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Leave(ctx, "room", bobCh, 0, true); err != nil {
		t.Fatal(err)
	}
	dan, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "dan", dan, nil); err != nil {
		t.Fatal(err)
	}
	b.sendPosted() // the three signals have been tried
	flaky.failing.Store(false)
	// dan's join comes, and no diff before it tells of bob.
	for {
		d := nextDiff(ctx, t, mem, adaCh)
		if _, ok := d.Joins["bob"]; ok {
			t.Fatalf("bob, who came and went while the signals failed, announced: %+v", d)
		}
		if _, ok := d.Joins["dan"]; ok {
			break
		}
	}
	if got := counting.reads.Load(); got != reads {
		t.Errorf("the other process read %d groups in full after the failed signals, want none", got-reads)
	}
}

// TestSweptLiveEntryIsWrittenBack: when a sweep removes an entry that its
// process still tracks (its refresh came too late, on an overloaded
// layer), that process writes it back and announces it, so that the other
// processes list it again at once rather than after a repair read.
func TestSweptLiveEntryIsWrittenBack(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	opts := Options{Interval: 20 * time.Millisecond} // TTL 30 s: no repair read within the test
	aOpts, logs := withLogs(opts)
	aOpts.Interval = 500 * time.Millisecond // a writes back at its next tick: b is seen without ada meanwhile
	a := newTracker(t, ctx, mem, aOpts)
	b := newTracker(t, ctx, mem, opts)
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	if list, ok := b.Cached("room"); !ok || len(list) != 2 {
		t.Fatalf("b's state after its Track: %v %v, want ada and bob", keys(list), ok)
	}
	a.sendPosted() // the signal of ada's Track is out, before the sweep's below

	// What a sweep does to an expired entry: removed, announced as gone.
	if err := mem.Untrack(ctx, "room", adaCh); err != nil {
		t.Fatal(err)
	}
	m, err := channellayer.NewMessage(signalType, signalBody{Gone: []signalEntry{{ID: adaCh, Key: "ada"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.GroupSend(ctx, signalPrefix+"room", m); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		list, ok := b.Cached("room")
		return ok && len(list) == 1
	}, "b taking ada for gone")
	testkit.Eventually(t, 10*time.Second, func() bool {
		members, err := mem.List(ctx, "room")
		return err == nil && len(members) == 2
	}, "ada's entry written back to the layer")
	testkit.Eventually(t, 10*time.Second, func() bool {
		list, ok := b.Cached("room")
		return ok && len(list) == 2
	}, "b listing ada again")
	if list, ok := a.Cached("room"); !ok || len(list) != 2 {
		t.Fatalf("a's own state %v %v, want ada and bob throughout", keys(list), ok)
	}
	if !strings.Contains(logs.String(), "expired before their refresh") {
		t.Errorf("no warning about the entry written back; logs:\n%s", logs.String())
	}
}

// heldSignals is a Memory layer whose GroupSend to signal groups waits,
// while hold is set, until gate is closed, and which records the most
// such sends in flight at once, and counts the TrackAll calls.
type heldSignals struct {
	*channellayer.Memory
	hold     atomic.Bool
	gate     chan struct{}
	inflight atomic.Int32
	most     atomic.Int32
	trackAll atomic.Int32
}

func (h *heldSignals) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	if h.hold.Load() && strings.HasPrefix(group, signalPrefix) {
		n := h.inflight.Add(1)
		for {
			most := h.most.Load()
			if n <= most || h.most.CompareAndSwap(most, n) {
				break
			}
		}
		<-h.gate
		h.inflight.Add(-1)
	}
	return h.Memory.GroupSend(ctx, group, m)
}

func (h *heldSignals) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	h.trackAll.Add(1)
	return h.Memory.TrackAll(ctx, groups, ttl)
}

// TestSweepSignalsAtOnceAndRefreshGoesOn: a sweep that finds expired
// entries in many groups sends their signals at once, not one round trip
// after the other; and while those signals wait on a slow layer (holding
// up the sweep), the refresh of the process's own entries goes on. A
// sweep after a node's death (every room has its entries) once held a
// process's loop for as many round trips as rooms, and its refresh with
// it, until its own entries expired.
func TestSweepSignalsAtOnceAndRefreshGoesOn(t *testing.T) {
	const groups = 20
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	l := &heldSignals{Memory: mem, gate: make(chan struct{})}
	tr := newTracker(t, ctx, l, Options{TTL: 300 * time.Millisecond, Interval: 20 * time.Millisecond})
	var once sync.Once
	release := func() { once.Do(func() { close(l.gate) }) }
	t.Cleanup(release) // before the tracker closes
	for i := range groups {
		name := fmt.Sprintf("room-%02d", i)
		ch, _ := mem.NewChannel(ctx)
		if err := tr.Track(ctx, name, "ada", ch, nil); err != nil {
			t.Fatal(err)
		}
		// An entry of a process that died: it expires at once.
		if err := mem.Track(ctx, name, fmt.Sprintf("dead-%d", i), []byte(`{"v":2,"k":"bob","t":1}`), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	l.hold.Store(true)
	testkit.Eventually(t, 10*time.Second, func() bool { return l.most.Load() >= groups }, "the sweep's signals of every group in flight at once")
	before := l.trackAll.Load()
	testkit.Eventually(t, 10*time.Second, func() bool { return l.trackAll.Load() >= before+2 }, "refreshes while the sweep waits")
	release()
}

// Failed signals that asked for sweeps are sent again asking for the
// earliest (its sweep finds when the next entry expires); an entry named
// twice is said again as last said.
func TestUnsentKeepsEarliestDueAndLastWord(t *testing.T) {
	u := &unsent{entries: make(map[string]signalEntry)}
	u.add(signalBody{Set: []signalEntry{{ID: "e1", Info: json.RawMessage(`{"k":"a"}`)}}, Due: 300})
	u.add(signalBody{Set: []signalEntry{{ID: "e2", Info: json.RawMessage(`{"k":"b"}`)}}, Due: 200})
	u.add(signalBody{Gone: []signalEntry{{ID: "e1", Key: "a"}}})
	b := u.body(nil)
	if b.Due != 200 {
		t.Errorf("Due %d, want the earliest, 200", b.Due)
	}
	if len(b.Gone) != 1 || b.Gone[0].ID != "e1" || len(b.Set) != 1 || b.Set[0].ID != "e2" {
		t.Errorf("resent %+v, want e1 gone and e2 set", b)
	}
}

// blockingSignals is a Memory layer whose publishes of change signals wait
// until release is closed, and are counted.
type blockingSignals struct {
	*channellayer.Memory
	release chan struct{}
	sent    atomic.Int64
}

func (b *blockingSignals) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	if strings.HasPrefix(group, signalPrefix) {
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
		b.sent.Add(1)
	}
	return b.Memory.GroupSend(ctx, group, m)
}

// A Track waits for the publish that tells the other trackers only when
// no other is under way; else it waits for its own write to the layer and
// returns: when a node dies and its people all come back on the others,
// that publish waits in line with the chat. The queued signals still go,
// in order; joins queued together go as one signal; and an entry that
// leaves with a grace period before its join was told is not told at all
// (its join could come after its removal elsewhere).
func TestTrackDoesNotWaitForSignalsInLine(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	slow := &blockingSignals{Memory: mem, release: make(chan struct{})}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, mem, opts)
	b := newTracker(t, ctx, slow, opts)
	adaCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	bobCh, _ := mem.NewChannel(ctx)
	bobDone := make(chan error, 1)
	go func() { bobDone <- b.Track(ctx, "room", "bob", bobCh, nil) }()
	testkit.Eventually(t, 5*time.Second, func() bool {
		if b.sendMu.TryLock() {
			b.sendMu.Unlock()
			return false
		}
		return true
	}, "bob's Track publishing its signal")
	select {
	case err := <-bobDone:
		t.Fatalf("bob's Track returned (%v) before its signal was published, with nothing in line", err)
	default:
	}
	returns := func(what string, f func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waited for the signal in line to be published", what)
		}
	}
	for _, key := range []string{"cid", "dan", "eve"} {
		ch, _ := mem.NewChannel(ctx)
		returns("Track of "+key, func() error { return b.Track(ctx, "room", key, ch, nil) })
		if key == "eve" {
			returns("Leave of eve", func() error { return b.Leave(ctx, "room", ch, time.Minute, false) })
		}
	}
	close(slow.release)
	if err := <-bobDone; err != nil {
		t.Fatal(err)
	}
	b.sendPosted()
	fay, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "fay", fay, nil); err != nil {
		t.Fatal(err)
	}
	joined := map[string]bool{}
	for !joined["fay"] {
		for k := range nextDiff(ctx, t, mem, adaCh).Joins {
			joined[k] = true
		}
	}
	if !joined["bob"] || !joined["cid"] || !joined["dan"] {
		t.Errorf("joins seen by the other tracker %v, want bob, cid and dan before fay", joined)
	}
	if joined["eve"] {
		t.Error("eve, who left with a grace period before her join was told, was announced")
	}
	// bob's, cid and dan's together, eve's grace, fay's.
	if n := slow.sent.Load(); n != 4 {
		t.Errorf("%d signals published; want 4: bob's, cid and dan's as one, eve's leave, fay's", n)
	}
}

// slowDiscard is a Memory layer whose GroupDiscard, while hold is set,
// tells entered, waits until gate is closed, and tells done once it
// has discarded.
type slowDiscard struct {
	*channellayer.Memory
	hold    atomic.Bool
	entered chan struct{}
	gate    chan struct{}
	done    chan struct{}
}

func (s *slowDiscard) GroupDiscard(ctx context.Context, group, channel string) error {
	if !s.hold.Load() {
		return s.Memory.GroupDiscard(ctx, group, channel)
	}
	s.entered <- struct{}{}
	<-s.gate
	defer close(s.done)
	return s.Memory.GroupDiscard(ctx, group, channel)
}

// TestTrackBesideLeavingTheSignals: when a group's last local entry
// leaves, the tracker leaves the group's signals; a Track in the group
// meanwhile keeps them. Before, a leave that had found the group gone
// could take the signals away after a Track made it again: the tracker
// then learned of no change there until its next repair read, TTLs later.
func TestTrackBesideLeavingTheSignals(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	slow := &slowDiscard{Memory: mem, entered: make(chan struct{}), gate: make(chan struct{}), done: make(chan struct{})}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, slow, opts)
	c := newTracker(t, ctx, mem, opts)
	release := sync.OnceFunc(func() { close(slow.gate) })
	t.Cleanup(release)

	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	carolCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	slow.hold.Store(true)
	if err := a.Leave(ctx, "room", adaCh, 0, true); err != nil {
		t.Fatal(err)
	}
	<-slow.entered // the group's last entry left: a is leaving its signals
	slow.hold.Store(false)
	tracked := make(chan error, 1)
	go func() { tracked <- a.Track(ctx, "room", "bob", bobCh, nil) }()
	// Give bob's Track the time to join the signals before the leave
	// goes on (it waits for the leave instead where the two are ordered).
	select {
	case err := <-tracked:
		tracked <- err
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-tracked; err != nil {
		t.Fatal(err)
	}
	<-slow.done
	if err := c.Track(ctx, "room", "carol", carolCh, nil); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		list, _ := a.Cached("room")
		return slices.Equal(keys(list), []string{"bob", "carol"})
	}, "a learning of carol's join from its signal")
}
