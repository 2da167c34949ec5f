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
