package presence

import (
	"testing"
	"time"

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
