package presence

import (
	"context"
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
	a := newTracker(t, ctx, mem, Options{})
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
