package layertest

import (
	"fmt"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// checkPresenceTrackAll: TrackAll adds entries of several groups at once,
// listed on every process like entries tracked one by one, and refreshes
// existing ones (their new TTL counts).
func checkPresenceTrackAll(e *env) {
	_, pb, ok := e.presence()
	if !ok {
		e.t.Skip("the backend does not implement channellayer.Presence")
	}
	ra, ok := e.a.(channellayer.PresenceRefresher)
	if !ok {
		e.t.Skip("the backend does not implement channellayer.PresenceRefresher")
	}
	pa := e.a.(channellayer.Presence)
	g1, g2 := e.name("room"), e.name("room")
	short := 300 * time.Millisecond
	e.track(pa, g1, "old", "v0", short)
	var many []channellayer.Member
	for i := range 600 { // more than one script call's worth
		many = append(many, mem(fmt.Sprintf("k%04d", i), "x"))
	}
	groups := map[string][]channellayer.Member{
		g1: {mem("a", "1"), mem("old", "v1")},
		g2: many,
	}
	if err := ra.TrackAll(e.ctx(waitFor), groups, time.Minute); err != nil {
		e.t.Fatalf("TrackAll: %v", err)
	}
	e.s.Sleep(2 * short) // the refreshed entry's first TTL is over
	e.list(pb, g1, "after TrackAll", mem("a", "1"), mem("old", "v1"))
	got, err := pb.List(e.ctx(waitFor), g2)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	if len(got) != len(many) {
		e.t.Errorf("List(%q) has %d entries, want %d", g2, len(got), len(many))
	}
	e.expire(pa, g1, "nothing expired")
	if err := ra.TrackAll(e.ctx(waitFor), map[string][]channellayer.Member{"": {mem("a", "1")}}, time.Minute); err == nil {
		e.t.Error("TrackAll with an empty group name succeeded")
	}
}

// checkPresenceExpireAll: ExpireAll removes the expired entries of many
// groups at once and hands each to one caller, like Expire.
func checkPresenceExpireAll(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		e.t.Skip("the backend does not implement channellayer.Presence")
	}
	ra, okA := e.a.(channellayer.PresenceRefresher)
	rb, okB := e.peer().(channellayer.PresenceRefresher)
	if !okA || !okB {
		e.t.Skip("the backend does not implement channellayer.PresenceRefresher")
	}
	g1, g2, g3 := e.name("room"), e.name("room"), e.name("room")
	short := 200 * time.Millisecond
	e.track(pa, g1, "a", "1", short)
	e.track(pb, g2, "b", "2", short)
	e.track(pa, g2, "c", "3", time.Minute)
	e.track(pb, g3, "d", "4", time.Minute)
	e.s.Sleep(2 * short)
	got, err := ra.ExpireAll(e.ctx(waitFor), []string{g1, g2, g3})
	if err != nil {
		e.t.Fatalf("ExpireAll: %v", err)
	}
	if len(got) != 2 || formatMembers(got[g1]) != "[a=1]" || formatMembers(got[g2]) != "[b=2]" {
		e.t.Errorf("ExpireAll = %v, want a in %s and b in %s", got, g1, g2)
	}
	again, err := rb.ExpireAll(e.ctx(waitFor), []string{g1, g2, g3})
	if err != nil || len(again) != 0 {
		e.t.Errorf("a second ExpireAll = %v, %v; want nothing (each entry once)", again, err)
	}
	e.list(pb, g2, "the live entry stays", mem("c", "3"))
}

// checkPresenceSweepAll: SweepAll removes the expired entries of many
// groups at once, each for one caller, like ExpireAll, and tells for every
// group named when its earliest remaining entry expires (zero: none left).
func checkPresenceSweepAll(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		e.t.Skip("the backend does not implement channellayer.Presence")
	}
	sa, okA := e.a.(channellayer.PresenceSweeper)
	sb, okB := e.peer().(channellayer.PresenceSweeper)
	if !okA || !okB {
		e.t.Skip("the backend does not implement channellayer.PresenceSweeper")
	}
	g1, g2, g3, empty := e.name("room"), e.name("room"), e.name("room"), e.name("room")
	short := 200 * time.Millisecond
	e.track(pa, g1, "a", "1", short)
	e.track(pb, g2, "b", "2", short)
	e.track(pa, g2, "c", "3", time.Minute)
	before := time.Now()
	e.track(pb, g3, "d", "4", 10*time.Minute)
	e.track(pa, g3, "e", "5", 20*time.Minute)
	after := time.Now()
	e.s.Sleep(2 * short)
	got, err := sa.SweepAll(e.ctx(waitFor), []string{g1, g2, g3, empty})
	if err != nil {
		e.t.Fatalf("SweepAll: %v", err)
	}
	if len(got) != 4 {
		e.t.Errorf("SweepAll answered %d groups, want all 4 it was given: %v", len(got), got)
	}
	if formatMembers(got[g1].Expired) != "[a=1]" || formatMembers(got[g2].Expired) != "[b=2]" || len(got[g3].Expired)+len(got[empty].Expired) != 0 {
		e.t.Errorf("SweepAll removed %v, want a in %s and b in %s only", got, g1, g2)
	}
	if !got[g1].Next.IsZero() || !got[empty].Next.IsZero() {
		e.t.Errorf("SweepAll: next expiry of a group left empty %v and of one never used %v, want zero", got[g1].Next, got[empty].Next)
	}
	// Expiries are kept to the millisecond.
	lo, hi := before.Add(10*time.Minute-time.Millisecond), after.Add(10*time.Minute+time.Millisecond)
	if n := got[g3].Next; n.Before(lo) || n.After(hi) {
		e.t.Errorf("SweepAll: next expiry of %s %v, want the earlier entry's, between %v and %v", g3, n, lo, hi)
	}
	if n := got[g2].Next; n.Before(before.Add(time.Minute-time.Second)) || n.After(after.Add(time.Minute+time.Millisecond)) {
		e.t.Errorf("SweepAll: next expiry of %s %v, want the live entry's, a minute after it was tracked", g2, n)
	}
	again, err := sb.SweepAll(e.ctx(waitFor), []string{g1, g2})
	if err != nil || len(again[g1].Expired)+len(again[g2].Expired) != 0 {
		e.t.Errorf("a second SweepAll = %v, %v; want nothing removed (each entry once)", again, err)
	}
	e.list(pb, g2, "the live entry stays", mem("c", "3"))
}

// checkPresenceListAll: ListAll lists many groups at once, on every
// process, each exactly as List does (sorted by key, expired entries left
// out and left in place for the sweep); a group with no live entry is left
// out of the map.
func checkPresenceListAll(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		e.t.Skip("the backend does not implement channellayer.Presence")
	}
	la, okA := e.a.(channellayer.PresenceLister)
	lb, okB := e.peer().(channellayer.PresenceLister)
	if !okA || !okB {
		e.t.Skip("the backend does not implement channellayer.PresenceLister")
	}
	short := 200 * time.Millisecond
	// Several groups (on a cluster, spread over its shards), with entries
	// from both processes, tracked out of key order.
	var groups []string
	want := make(map[string][]channellayer.Member)
	for i := range 12 {
		g := e.name("room")
		groups = append(groups, g)
		for j := i % 4; j >= 0; j-- {
			p := pa
			if j%2 == 1 {
				p = pb
			}
			key, info := fmt.Sprintf("k%d", j), fmt.Sprintf("%d.%d", i, j)
			e.track(p, g, key, info, time.Minute)
			want[g] = append([]channellayer.Member{mem(key, info)}, want[g]...)
		}
	}
	mixed, gone, empty := groups[3], e.name("room"), e.name("room")
	e.track(pb, mixed, "a-dies", "x", short)
	e.track(pa, gone, "dies", "y", short)
	e.s.Sleep(2 * short)

	ask := append(append([]string{}, groups...), gone, empty, groups[0]) // groups[0] twice
	for _, l := range []struct {
		name string
		l    channellayer.PresenceLister
	}{{"Layer", la}, {"Peer", lb}} {
		got, err := l.l.ListAll(e.ctx(waitFor), ask)
		if err != nil {
			e.t.Fatalf("%s.ListAll: %v", l.name, err)
		}
		for _, g := range groups {
			if formatMembers(got[g]) != formatMembers(want[g]) {
				e.t.Errorf("%s.ListAll()[%q] = %s, want %s", l.name, g, formatMembers(got[g]), formatMembers(want[g]))
			}
			e.list(pb, g, "List agrees with ListAll", want[g]...)
		}
		for _, g := range []string{gone, empty} {
			if ms, present := got[g]; present {
				e.t.Errorf("%s.ListAll()[%q] = %s, present; want the group left out (no live entry)", l.name, g, formatMembers(ms))
			}
		}
		if len(got) != len(groups) {
			e.t.Errorf("%s.ListAll() has %d groups, want %d", l.name, len(got), len(groups))
		}
	}
	// Listing swept nothing: the expired entries are still there for the
	// sweep, which hands them out.
	e.expire(pa, mixed, "ListAll left the expired entry", mem("a-dies", "x"))
	e.expire(pb, gone, "ListAll left the expired entry", mem("dies", "y"))

	got, err := la.ListAll(e.ctx(waitFor), nil)
	if err != nil || len(got) != 0 {
		e.t.Errorf("ListAll(nil) = %v, %v; want an empty map", got, err)
	}
}
