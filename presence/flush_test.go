package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// countingLayer is a Memory layer that counts the presence reads made
// through it, and can fail its next ListAll calls.
type countingLayer struct {
	*channellayer.Memory

	mu          sync.Mutex
	lists       int   // List calls
	listAlls    []int // the number of groups of each ListAll call
	failListAll int   // how many of the next ListAll calls fail
	// gate, if set, holds the next ListAll call until it is closed;
	// entered receives when that call is held.
	gate, entered chan struct{}
}

var errInjected = errors.New("injected ListAll failure")

func (c *countingLayer) List(ctx context.Context, group string) ([]channellayer.Member, error) {
	c.mu.Lock()
	c.lists++
	c.mu.Unlock()
	return c.Memory.List(ctx, group)
}

func (c *countingLayer) ListAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	c.mu.Lock()
	c.listAlls = append(c.listAlls, len(groups))
	fail := c.failListAll > 0
	if fail {
		c.failListAll--
	}
	gate, entered := c.gate, c.entered
	c.gate = nil
	c.mu.Unlock()
	if gate != nil {
		entered <- struct{}{} // buffered: never blocks
		<-gate
	}
	if fail {
		return nil, errInjected
	}
	return c.Memory.ListAll(ctx, groups)
}

// reset forgets the calls counted so far, makes the next fail ListAll
// calls fail and holds the next one until gate is closed (if not nil);
// the channel it returns receives once that call is held.
func (c *countingLayer) reset(fail int, gate chan struct{}) (entered chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lists, c.listAlls, c.failListAll = 0, nil, fail
	c.gate, c.entered = gate, make(chan struct{}, 1)
	return c.entered
}

func (c *countingLayer) counts() (lists int, listAlls []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lists, append([]int(nil), c.listAlls...)
}

// listOnly is a layer with Presence but without channellayer.PresenceLister
// (nor PresenceRefresher).
type listOnly struct {
	channellayer.Layer
	channellayer.Presence
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// withLogs returns opts with a logger that writes to the buffer returned.
func withLogs(opts Options) (Options, *syncBuffer) {
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return opts, logs
}

// TestTrackerFlushReadsInBatches: when 600 groups are to be read in full
// at once (here: a process of a release before incremental signals tracks
// someone in each, and asks every tracker to read the group), a tracker on
// a PresenceLister reads their states with ListAll calls of at most 500
// groups and no List (its read of the first group is held until every
// other group is due, so that a flush has more than 500 to read); on a
// layer without it, with
// one List per group. Either way, every group's local entry gets the diff,
// also when the first ListAll fails (its groups are read again at the next
// flush).
func TestTrackerFlushReadsInBatches(t *testing.T) {
	const groups = 600
	tests := []struct {
		name   string
		lister bool
		fail   int // ListAll calls that fail
	}{
		{"ListAll", true, 0},
		{"ListAllFailsOnce", true, 1},
		{"ListPerGroup", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testkit.ContextWithin(t, 60*time.Second)
			mem := newMemory(t)
			counting := &countingLayer{Memory: mem}
			var layerA channellayer.Layer = counting
			if !tt.lister {
				layerA = listOnly{Layer: counting, Presence: counting}
			}
			opts, logs := withLogs(Options{Interval: 50 * time.Millisecond})
			a := newTracker(t, ctx, layerA, opts)

			names := make([]string, groups)
			chans := make([]string, groups)
			for i := range groups {
				names[i] = fmt.Sprintf("room-%03d", i)
				var err error
				if chans[i], err = mem.NewChannel(ctx); err != nil {
					t.Fatal(err)
				}
				if err := a.Track(ctx, names[i], "alice", chans[i], nil); err != nil {
					t.Fatal(err)
				}
			}
			var gate chan struct{}
			var release sync.Once
			if tt.lister {
				gate = make(chan struct{})
				// Before the trackers close, should the test end early.
				t.Cleanup(func() { release.Do(func() { close(gate) }) })
			}
			entered := counting.reset(tt.fail, gate)
			first := 0
			if gate != nil {
				// The first group's read is held while the others are
				// signalled, so that they are all due for the next flush.
				trackAsBefore(ctx, t, mem, names[0], "bob", "bob-0")
				testkit.Receive(t, entered, 10*time.Second, "a flush reading with ListAll")
				first = 1
			}
			for i := first; i < groups; i++ {
				trackAsBefore(ctx, t, mem, names[i], "bob", fmt.Sprintf("bob-%d", i))
			}
			if gate != nil {
				testkit.Eventually(t, 10*time.Second, func() bool {
					return a.dueGroups() >= groups-1
				}, "every group but the held one due")
				release.Do(func() { close(gate) })
			}
			for i := range groups {
				waitJoin(ctx, t, mem, chans[i], names[i], "bob")
			}

			lists, listAlls := counting.counts()
			read := 0
			for _, n := range listAlls {
				if n > flushChunk {
					t.Errorf("a ListAll call read %d groups, want at most %d", n, flushChunk)
				}
				read += n
			}
			if tt.lister {
				if lists != 0 {
					t.Errorf("%d List calls, want none: flushes read with ListAll", lists)
				}
				// A failed read makes its groups due again an Interval
				// later, so after a failure the rest may go first, in a
				// call of fewer than flushChunk.
				if read < groups || (tt.fail == 0 && !slices.Contains(listAlls, flushChunk)) {
					t.Errorf("ListAll calls read %v groups, want at least %d in all, and (without a failure) one call of %d", listAlls, groups, flushChunk)
				}
			} else {
				if len(listAlls) != 0 {
					t.Errorf("ListAll called %v on a layer without it", listAlls)
				}
				if lists < groups {
					t.Errorf("%d List calls, want at least one per group (%d)", lists, groups)
				}
			}
			if warned := strings.Contains(logs.String(), "will retry"); warned != (tt.fail > 0) {
				t.Errorf("a retry warning logged: %v, want %v; logs:\n%s", warned, tt.fail > 0, logs.String())
			}
		})
	}
}

// trackAsBefore tracks key in group as a tracker of a release before
// incremental signals did: the entry straight on the layer, then a signal
// with the key and meta of the join but not the entry, which asks every
// tracker to read the group in full.
func trackAsBefore(ctx context.Context, t *testing.T, mem *channellayer.Memory, group, key, id string) {
	t.Helper()
	b, _ := json.Marshal(info{Key: key, Since: time.Now().UnixNano()})
	if err := mem.Track(ctx, group, id, b, time.Minute); err != nil {
		t.Fatal(err)
	}
	m, err := channellayer.NewMessage(signalType, map[string]any{"k": key})
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.GroupSend(ctx, signalPrefix+group, m); err != nil {
		t.Fatal(err)
	}
}

// waitJoin receives diffs on channel until one has key join group.
func waitJoin(ctx context.Context, t *testing.T, l channellayer.Layer, channel, group, key string) {
	t.Helper()
	for {
		d := nextDiff(ctx, t, l, channel)
		if d.Group != group {
			t.Fatalf("diff of %s on %s, the channel of an entry of %s", d.Group, channel, group)
		}
		if _, ok := d.Joins[key]; ok {
			return
		}
	}
}

// dueGroups returns how many groups wait for a flush and are due for the
// next one, early or not: flushed at least Interval ago.
func (t *Tracker) dueGroups() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, g := range t.groups {
		if g.dirty && time.Since(g.lastFlush) >= t.opts.Interval {
			n++
		}
	}
	return n
}

// stallingSend stalls the first diff it is asked to send, once armed, for
// longer than the tracker's 5 s call deadline: a process starved of CPU
// in the middle of delivering a flush's diffs.
type stallingSend struct {
	*channellayer.Memory
	armed atomic.Bool
}

func (s *stallingSend) Send(ctx context.Context, channel string, m channellayer.Message) error {
	if m.Type == DiffType && s.armed.CompareAndSwap(true, false) {
		time.Sleep(5200 * time.Millisecond)
	}
	return s.Memory.Send(ctx, channel, m)
}

// TestDiffsAfterAStallAreDelivered: when delivering a flush's diffs takes
// longer than a call's deadline, the diffs after the slow one still reach
// their channels. They were dropped, and the rooms' users frames on that
// node stayed without the change.
func TestDiffsAfterAStallAreDelivered(t *testing.T) {
	t.Parallel()
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	stall := &stallingSend{Memory: mem}
	a := newTracker(t, ctx, stall, Options{Interval: 20 * time.Millisecond})
	b := newTracker(t, ctx, mem, Options{Interval: 20 * time.Millisecond})
	ada, _ := mem.NewChannel(ctx)
	bob, _ := mem.NewChannel(ctx)
	for id, key := range map[string]string{ada: "ada", bob: "bob"} {
		if err := a.Track(ctx, "room", key, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []string{ada, bob} { // the joins of ada and bob
		for d := nextDiff(ctx, t, mem, ch); d.Count != 2; d = nextDiff(ctx, t, mem, ch) {
		}
	}
	stall.armed.Store(true)
	carol, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "carol", carol, nil); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{ada, bob} {
		if d := nextDiff(ctx, t, mem, ch); d.Joins["carol"] == nil || d.Count != 3 {
			t.Fatalf("diff on %s: %+v, want carol's join, count 3", ch, d)
		}
	}
}
