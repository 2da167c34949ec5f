package layertest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/presence"
)

// The presence rules below run package presence's Tracker, one per
// process, on the backend: merging per key, diffs, grace, refresh, and the
// cleanup of a dead process, cluster-wide.

const (
	trackTTL      = 1500 * time.Millisecond
	trackInterval = 50 * time.Millisecond
)

// trackers returns a tracker on the layer and one on its peer, closed when
// the rule ends; the rule is skipped if the backend has no Presence.
func (e *env) trackers() (*presence.Tracker, *presence.Tracker) {
	e.t.Helper()
	if _, _, ok := e.presence(); !ok {
		e.t.Skip("the backend does not implement channellayer.Presence")
	}
	return e.tracker(e.a), e.tracker(e.peer())
}

func (e *env) tracker(l channellayer.Layer) *presence.Tracker {
	e.t.Helper()
	tr, err := presence.New(e.ctx(waitFor), l, presence.Options{TTL: trackTTL, Interval: trackInterval})
	if err != nil {
		e.t.Fatalf("presence.New: %v", err)
	}
	e.t.Cleanup(func() { _ = tr.Close(e.ctx(waitFor)) })
	return tr
}

func (e *env) trackAs(tr *presence.Tracker, group, key, id string, meta any) {
	e.t.Helper()
	if err := tr.Track(e.ctx(waitFor), group, key, id, meta); err != nil {
		e.t.Fatalf("Track(%q, %q): %v", group, key, err)
	}
}

// presenceString prints a presence list as key:meta,meta key:meta.
func presenceString(ps []presence.Presence) string {
	var parts []string
	for _, p := range ps {
		var metas []string
		for _, m := range p.Metas {
			metas = append(metas, string(m))
		}
		parts = append(parts, p.Key+":"+strings.Join(metas, ","))
	}
	return strings.Join(parts, " ")
}

// listed waits until List on tr gives want (see presenceString).
func (e *env) listed(tr *presence.Tracker, group, want, why string) {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	var got string
	for time.Now().Before(deadline) {
		ps, err := tr.List(e.ctx(waitFor), group)
		if err != nil {
			e.t.Fatalf("List(%q): %v", group, err)
		}
		if got = presenceString(ps); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not an assertion
	}
	e.t.Fatalf("%s: List(%q) = %q, want %q", why, group, got, want)
}

// diffs collects the presence diffs that reach a channel.
type diffs struct {
	joins, leaves []string
}

// nextDiff waits for the next diff on a channel.
func (e *env) nextDiff(m member) presence.Diff {
	e.t.Helper()
	msg := e.recv(m.l, m.name)
	if msg.Type != presence.DiffType {
		e.t.Fatalf("channel %s got %s, want a %s", m.name, msg.Body, presence.DiffType)
	}
	var d presence.Diff
	if err := json.Unmarshal(msg.Body, &d); err != nil {
		e.t.Fatalf("diff %s: %v", msg.Body, err)
	}
	return d
}

// collect gathers diffs on m until the joins and leaves seen are want
// (sorted key lists), or fails.
func (e *env) collect(m member, wantJoins, wantLeaves string) {
	e.t.Helper()
	var seen diffs
	for {
		d := e.nextDiff(m)
		for k := range d.Joins {
			seen.joins = append(seen.joins, k)
		}
		for k := range d.Leaves {
			seen.leaves = append(seen.leaves, k)
		}
		sort.Strings(seen.joins)
		sort.Strings(seen.leaves)
		j, l := strings.Join(seen.joins, ","), strings.Join(seen.leaves, ",")
		if j == wantJoins && l == wantLeaves {
			return
		}
		if len(j) > len(wantJoins) || len(l) > len(wantLeaves) {
			e.t.Fatalf("channel %s saw joins %q and leaves %q, want %q and %q", m.name, j, l, wantJoins, wantLeaves)
		}
	}
}

// checkTrackerMerge: entries of one key on any process are one Presence
// with a meta per entry, oldest first; keys sort by name.
func checkTrackerMerge(e *env) {
	ta, tb := e.trackers()
	g := e.name("merge")
	e.trackAs(ta, g, "ada", "a1", map[string]int{"tab": 1})
	e.trackAs(tb, g, "Bob", "b1", nil)
	e.trackAs(tb, g, "ada", "b2", map[string]int{"tab": 2})
	e.trackAs(ta, g, "ada", "a3", map[string]int{"tab": 3})
	want := `ada:{"tab":1},{"tab":2},{"tab":3} Bob:null`
	e.listed(ta, g, want, "listed where tracked")
	e.listed(tb, g, want, "listed on the other process")
	if err := ta.Leave(e.ctx(waitFor), g, "a1", 0, false); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.listed(tb, g, `ada:{"tab":2},{"tab":3} Bob:null`, "after one tab left")
}

// checkTrackerDiffs: a join and a leave on one process reach the tracked
// channels of every process as diffs, each once; a key that keeps another
// entry does not leave.
func checkTrackerDiffs(e *env) {
	ta, tb := e.trackers()
	g := e.name("diff")
	watchA, watchB := e.member(e.a), e.member(e.peer())
	e.trackAs(ta, g, "watcher-a", watchA.name, nil)
	e.trackAs(tb, g, "watcher-b", watchB.name, nil)
	e.listed(ta, g, "watcher-a:null watcher-b:null", "watchers")
	// What the watchers' own joins caused: watcher-a's process started
	// from a state with watcher-a alone, and sees watcher-b join (however
	// late that diff comes: a quiet spell is no proof it will not);
	// watcher-b's started from a state with both.
	e.collect(watchA, "watcher-b", "")
	e.drainDiffs(watchB)

	e.trackAs(tb, g, "carol", "c1", nil)
	e.trackAs(tb, g, "carol", "c2", nil) // a second tab: no second join
	e.collect(watchA, "carol", "")
	e.collect(watchB, "carol", "")
	if err := tb.Leave(e.ctx(waitFor), g, "c1", 0, true); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.listed(ta, g, "carol:null watcher-a:null watcher-b:null", "carol's other tab stays")
	if err := tb.Leave(e.ctx(waitFor), g, "c2", 0, true); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.collect(watchA, "", "carol")
	e.collect(watchB, "", "carol")
	e.noDiff(watchA, "after the leave")
}

// drainDiffs takes the diffs waiting on a channel, until it is quiet.
func (e *env) drainDiffs(m member) {
	e.t.Helper()
	for {
		msg, err := m.l.Receive(e.ctx(4*trackInterval), m.name)
		if err != nil {
			return
		}
		if msg.Type != presence.DiffType {
			e.t.Fatalf("channel %s got %s", m.name, msg.Body)
		}
	}
}

func (e *env) noDiff(m member, why string) {
	e.t.Helper()
	e.noDiffFor(m, 4*trackInterval, why)
}

// noDiffFor watches a channel for d: nothing may come.
func (e *env) noDiffFor(m member, d time.Duration, why string) {
	e.t.Helper()
	msg, err := m.l.Receive(e.ctx(d), m.name)
	if err == nil {
		e.t.Errorf("%s: channel %s got %s, want nothing", why, m.name, msg.Body)
	}
}

// checkTrackerBurst: a burst of joins reaches a watcher as few diffs that
// add up to the burst, never one per join per watcher.
func checkTrackerBurst(e *env) {
	ta, tb := e.trackers()
	g := e.name("burst")
	watch := e.member(e.a)
	e.trackAs(ta, g, "watcher", watch.name, nil)
	e.drainDiffs(watch)
	const n = 30
	// The joins come at once, as a crowd does: how long one takes does
	// not spread them out.
	start := time.Now()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			k := fmt.Sprintf("k%02d", i)
			errs <- tb.Track(e.ctx(waitFor), g, k, "id-"+k, nil)
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			e.t.Fatalf("Track: %v", err)
		}
	}
	got := 0
	seen := map[string]bool{}
	for len(seen) < n {
		d := e.nextDiff(watch)
		got++
		for k := range d.Joins {
			if seen[k] {
				e.t.Fatalf("key %s joined twice", k)
			}
			seen[k] = true
		}
	}
	// A tracker sends a group's diff at most once per Interval when woken
	// by a change, and once more at each tick: at most two per Interval
	// the burst lasted, and one at its start. A loaded machine stretches
	// the burst, so the bound follows the time it took.
	took := time.Since(start)
	bound := min(2*int(took/trackInterval)+2, n-1)
	if got > bound {
		e.t.Errorf("%d joins over %v made %d diffs, want at most %d: not coalesced", n, took, got, bound)
	}
}

// checkTrackerGrace: an entry that leaves with a grace period stays listed;
// the key coming back within it is no leave; a grace that runs out is.
func checkTrackerGrace(e *env) {
	ta, tb := e.trackers()
	g := e.name("grace")
	watch := e.member(e.a)
	e.trackAs(ta, g, "watcher", watch.name, nil)
	e.trackAs(tb, g, "dora", "d1", nil)
	e.listed(ta, g, "dora:null watcher:null", "joined")
	e.drainDiffs(watch)

	// The grace is long beside the few calls that must fit in it (a List,
	// a Track), so that a loaded machine still makes them in time.
	grace := time.Second
	left := time.Now()
	if err := tb.Leave(e.ctx(waitFor), g, "d1", grace, false); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.listed(ta, g, "dora:null watcher:null", "listed while in grace")
	e.trackAs(ta, g, "dora", "d2", nil) // back, on the other process
	if back := time.Since(left); back >= grace {
		e.t.Fatalf("the key came back %v after the leave, not within the grace of %v: the machine is too slow for this rule", back, grace)
	}
	// Listed with one meta (not "dora:null,null") once the old entry
	// expired and was swept.
	e.listed(ta, g, "dora:null watcher:null", "the old entry expired, the key stays")
	e.drainDiffs(watch) // updates only
	grace = 300 * time.Millisecond
	if err := ta.Leave(e.ctx(waitFor), g, "d2", grace, false); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.collect(watch, "", "dora") // after the grace, swept
	e.listed(tb, g, "watcher:null", "gone everywhere")
}

// checkTrackerFinal: a leave on purpose takes the key's entries waiting
// out a grace period with it, unless another entry of the key is live.
func checkTrackerFinal(e *env) {
	ta, tb := e.trackers()
	g := e.name("final")
	e.trackAs(ta, g, "erin", "e1", nil)
	e.trackAs(tb, g, "erin", "e2", nil)
	if err := ta.Leave(e.ctx(waitFor), g, "e1", time.Minute, false); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.listed(tb, g, "erin:null,null", "one entry in grace")
	if err := tb.Leave(e.ctx(waitFor), g, "e2", 0, true); err != nil {
		e.t.Fatalf("Leave: %v", err)
	}
	e.listed(ta, g, "", "a final leave takes the waiting entry too")
}

// checkTrackerRefreshAndDeath: a live tracker keeps its entries past the
// TTL; a dead one's entries are swept by a survivor after the TTL, and the
// survivor's channels see each leave once.
func checkTrackerRefreshAndDeath(e *env) {
	ta, tb := e.trackers()
	g := e.name("death")
	watch := e.member(e.a)
	e.trackAs(ta, g, "watcher", watch.name, nil)
	e.trackAs(tb, g, "frank", "f1", nil)
	e.trackAs(tb, g, "gina", "g1", nil)
	e.listed(ta, g, "frank:null gina:null watcher:null", "joined")
	e.drainDiffs(watch)
	// Twice the TTL passes, refreshed meanwhile: no diff all along. The
	// watcher receives all the while: a diff left waiting in its channel
	// would expire there unseen (Setup.Expiry). Entries expire by the
	// processes' clocks, not the store's: the store's time need not move.
	e.noDiffFor(watch, 2*trackTTL, "while refreshed")
	e.listed(ta, g, "frank:null gina:null watcher:null", "refreshed past the TTL")

	if err := tb.Close(e.ctx(waitFor)); err != nil { // dies: no goodbye
		e.t.Fatalf("Close: %v", err)
	}
	// The leaves come a TTL after tb's last refresh, up to a third of a
	// TTL before the close: received as they come, not after a sleep
	// they could have expired in.
	e.collect(watch, "", "frank,gina")
	e.listed(ta, g, "watcher:null", "the dead process's entries are gone")
	e.noDiff(watch, "each leave is delivered once")
}
