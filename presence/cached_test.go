package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

func keys(list []Presence) []string {
	out := make([]string, len(list))
	for i, p := range list {
		out[i] = p.Key
	}
	return out
}

// TestCachedFollowsTheDiffs: Cached has no state for a group with no
// local entry; once one is tracked it has the group's state, and when a
// diff of the group reaches a local entry, Cached already has the state
// that diff went up to, read without a further call to the layer; it is
// gone with the group's last local entry.
func TestCachedFollowsTheDiffs(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	counting := &countingLayer{Memory: mem}
	opts := Options{Interval: 20 * time.Millisecond}
	a := newTracker(t, ctx, counting, opts)
	b := newTracker(t, ctx, mem, opts)

	if list, ok := a.Cached("room"); ok {
		t.Fatalf("Cached of a group not tracked here: %v, want none", list)
	}
	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	cidCh, _ := mem.NewChannel(ctx)
	if err := b.Track(ctx, "room", "bob", bobCh, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Track(ctx, "room", "ada", adaCh, map[string]string{"n": "Ada"}); err != nil {
		t.Fatal(err)
	}
	list, ok := a.Cached("room")
	if !ok || len(list) != 2 || list[0].Key != "ada" || list[1].Key != "bob" {
		t.Fatalf("Cached after the first Track: %v %v, want ada and bob", keys(list), ok)
	}
	if string(list[0].Metas[0]) != `{"n":"Ada"}` {
		t.Fatalf("ada's metas %s, want her meta", list[0].Metas)
	}

	// Each diff that reaches ada: Cached has its state.
	if err := b.Track(ctx, "room", "cid", cidCh, nil); err != nil {
		t.Fatal(err)
	}
	waitJoin(ctx, t, mem, adaCh, "room", "cid")
	counting.reset(0, nil)
	if list, ok := a.Cached("room"); !ok || len(list) != 3 || list[2].Key != "cid" {
		t.Fatalf("Cached after cid's join reached ada: %v %v, want ada, bob, cid", keys(list), ok)
	}
	if err := b.Leave(ctx, "room", bobCh, 0, false); err != nil {
		t.Fatal(err)
	}
	waitLeave(ctx, t, mem, adaCh, "bob")
	if list, ok := a.Cached("room"); !ok || len(list) != 2 || list[0].Key != "ada" || list[1].Key != "cid" {
		t.Fatalf("Cached after bob's leave reached ada: %v %v, want ada, cid", keys(list), ok)
	}
	if lists, listAlls := counting.counts(); lists != 0 {
		t.Errorf("%d List calls while reading Cached (and %v ListAll of the diffs), want none", lists, listAlls)
	}

	if err := a.Leave(ctx, "room", adaCh, 0, false); err != nil {
		t.Fatal(err)
	}
	if list, ok := a.Cached("room"); ok {
		t.Fatalf("Cached after the last local entry left: %v, want none", keys(list))
	}
}

// muteSignals is a memory layer that sends no change signal: a tracker
// on it learns of a change only from itself.
type muteSignals struct{ *channellayer.Memory }

func (m muteSignals) GroupSend(ctx context.Context, group string, msg channellayer.Message) error {
	if strings.HasPrefix(group, signalPrefix) {
		return nil
	}
	return m.Memory.GroupSend(ctx, group, msg)
}

// TestCachedHasOwnTrackAtOnce: once Track returns, Cached lists the
// entry, also in a group the tracker already knew, before (here: without)
// the change signal coming back; so a joiner's first view of its group
// needs no read of the whole group from the layer.
func TestCachedHasOwnTrackAtOnce(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	a := newTracker(t, ctx, muteSignals{mem}, Options{Interval: 20 * time.Millisecond})

	adaCh, _ := mem.NewChannel(ctx)
	bobCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	if list, ok := a.Cached("room"); !ok || len(list) != 1 || list[0].Key != "ada" {
		t.Fatalf("Cached after the group's first Track: %v %v, want ada", keys(list), ok)
	}
	if err := a.Track(ctx, "room", "bob", bobCh, map[string]string{"n": "Bob"}); err != nil {
		t.Fatal(err)
	}
	list, ok := a.Cached("room")
	if !ok || len(list) != 2 || list[1].Key != "bob" || string(list[1].Metas[0]) != `{"n":"Bob"}` {
		t.Fatalf("Cached right after bob's Track: %v %v, want ada and bob with his meta", keys(list), ok)
	}
	// Tracked again (its meta changed): one entry, the new meta.
	if err := a.Track(ctx, "room", "bob", bobCh, map[string]string{"n": "Robert"}); err != nil {
		t.Fatal(err)
	}
	list, ok = a.Cached("room")
	if !ok || len(list) != 2 || len(list[1].Metas) != 1 || string(list[1].Metas[0]) != `{"n":"Robert"}` {
		t.Fatalf("Cached after bob's meta changed: %v %v, want bob once with the new meta", list, ok)
	}
}

// TestCachedAllocatesOnce: Cached copies a group of 100 keys in two
// allocations (the list and one array for all the metas), not one per key:
// a chat node builds a users frame from it for every room that changed,
// each second.
func TestCachedAllocatesOnce(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	// AllocsPerRun counts the whole process's allocations: no flush of
	// the tracker's own may run while it measures.
	a := newTracker(t, ctx, mem, Options{Interval: time.Hour})
	for i := range 100 {
		ch, _ := mem.NewChannel(ctx)
		if err := a.Track(ctx, "room", fmt.Sprintf("Key-%03d", i), ch, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if list, ok := a.Cached("room"); !ok || len(list) != 100 {
		t.Fatalf("Cached: %d keys %v, want 100", len(list), ok)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = a.Cached("room") }); n > 2 {
		t.Errorf("Cached of 100 keys: %v allocations, want at most 2", n)
	}
}

// TestCachedKeepsALeaveUntilItsDiff: a key whose entries are all gone
// stays in Cached, with its metas of the last diff, until the next diff is
// taken. Signals from two processes come in either order: a person back
// on another process is gone here for a moment between the sweep of the
// old entry and the set of the new, and a users frame built then lacked
// the person while the diff (a meta update) asked nobody to look again.
func TestCachedKeepsALeaveUntilItsDiff(t *testing.T) {
	ctx := testkit.ContextWithin(t, 30*time.Second)
	mem := newMemory(t)
	a := newTracker(t, ctx, muteSignals{mem}, Options{Interval: time.Hour})
	adaCh, _ := mem.NewChannel(ctx)
	if err := a.Track(ctx, "room", "ada", adaCh, nil); err != nil {
		t.Fatal(err)
	}
	set := func(id, meta string) op {
		return infoOp(id, info{Format: infoFormat, Key: "bob", Meta: json.RawMessage(meta), Since: 1})
	}
	gone := op{id: idHash("bob-1"), key: "bob", gone: true}
	step := func(what string, ops []op, diff bool, want string) Diff {
		t.Helper()
		a.mu.Lock()
		g := a.groups["room"]
		g.apply(ops)
		var d Diff
		if diff {
			d = g.takeDiff("room")
		}
		a.mu.Unlock()
		list, ok := a.Cached("room")
		var got []string
		for _, p := range list {
			got = append(got, p.Key+string(p.Metas[0]))
		}
		if !ok || strings.Join(got, " ") != want {
			t.Fatalf("%s: Cached %v %v, want %s", what, got, ok, want)
		}
		return d
	}
	step("bob's first entry, diffed", []op{set("bob-1", `"old"`)}, true, `adanull bob"old"`)
	step("its sweep, before the new entry's set", []op{gone}, false, `adanull bob"old"`)
	step("the new entry's set", []op{set("bob-2", `"new"`)}, false, `adanull bob"new"`)
	if d := step("the diff", nil, true, `adanull bob"new"`); len(d.Joins)+len(d.Leaves) != 0 || d.Updates["bob"] == nil {
		t.Fatalf("the diff of bob's move: %+v, want a meta update", d)
	}
	step("bob gone for good, before the diff", []op{{id: idHash("bob-2"), key: "bob", gone: true}}, false, `adanull bob"new"`)
	if d := step("after the diff", nil, true, "adanull"); d.Leaves["bob"] == nil {
		t.Fatalf("the diff of bob's leave: %+v, want bob in its leaves", d)
	}
}
