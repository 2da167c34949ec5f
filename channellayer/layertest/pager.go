package layertest

import (
	"errors"
	"fmt"

	"github.com/chatterpro/chatterpro/channellayer"
)

// pager returns the Pager of the layer and of its peer, or false (and logs
// why) if the backend does not implement it.
func (e *env) pager() (pa, pb channellayer.Pager, ok bool) {
	e.t.Helper()
	pa, ok = e.a.(channellayer.Pager)
	if !ok {
		e.t.Logf("%T does not implement channellayer.Pager: rule does not apply", e.a)
		return nil, nil, false
	}
	pb, ok = e.peer().(channellayer.Pager)
	if !ok {
		e.t.Fatalf("Layer implements channellayer.Pager, its peer %T does not", e.peer())
	}
	return pa, pb, true
}

func (e *env) before(p channellayer.Pager, group, id string, n int, want []channellayer.Message, wantMore bool) {
	e.t.Helper()
	got, more, err := p.Before(e.ctx(waitFor), group, id, n)
	if err != nil {
		e.t.Fatalf("Before(%q, %d): %v", id, n, err)
	}
	e.same(fmt.Sprintf("Before(%q, %d)", id, n), got, want)
	if more != wantMore {
		e.t.Errorf("Before(%q, %d): more = %v, want %v", id, n, more, wantMore)
	}
}

func (e *env) beforeUnknown(p channellayer.Pager, group, id, why string) {
	e.t.Helper()
	got, _, err := p.Before(e.ctx(waitFor), group, id, 5)
	if !errors.Is(err, channellayer.ErrUnknownID) {
		e.t.Errorf("Before(%q) of %s ID: %s, %v; want %v", id, why, ids(got), err, channellayer.ErrUnknownID)
	}
}

// checkHistoryBefore: Before pages back from a kept ID, oldest first, says
// whether older messages are kept, never returns trimmed ones, and gives
// ErrUnknownID for malformed, unknown and trimmed IDs.
func checkHistoryBefore(e *env) {
	pa, pb, ok := e.pager()
	if !ok {
		return
	}
	ha, hb, ok := e.history()
	if !ok {
		e.t.Fatalf("%T implements channellayer.Pager but not channellayer.History", e.a)
	}
	g := e.name("room")
	var recs []channellayer.Message
	for i := range 10 {
		recs = append(recs, e.record([]channellayer.History{ha, hb}[i%2], g, 0, i))
	}
	for _, p := range []channellayer.Pager{pa, pb} {
		e.before(p, g, recs[9].ID, 3, recs[6:9], true)
		e.before(p, g, recs[3].ID, 3, recs[0:3], false)
		e.before(p, g, recs[2].ID, 5, recs[0:2], false)
		e.before(p, g, recs[0].ID, 5, nil, false)
		e.before(p, g, recs[5].ID, 0, nil, true)
	}
	for _, bad := range []struct{ id, why string }{
		{"", "an empty"},
		{"garbage", "a malformed"},
		{"1-0", "an unknown, long past"},
		{"99999999999999-0", "an unknown, future"},
	} {
		e.beforeUnknown(pb, g, bad.id, bad.why)
	}
	e.beforeUnknown(pa, e.name("room"), recs[5].ID, "another group's")

	// Trimmed: only what the history keeps is paged.
	size := e.s.HistorySize
	for i := len(recs); i < size+3; i++ {
		recs = append(recs, e.record(ha, g, 0, i))
	}
	kept := recs[3:]
	last := kept[len(kept)-1].ID
	e.before(pb, g, last, size, kept[:size-1], false)
	e.before(pa, g, last, size-2, kept[1:size-1], true)
	e.before(pa, g, kept[0].ID, 5, nil, false)
	e.before(pb, g, kept[1].ID, 5, kept[:1], false)
	e.beforeUnknown(pb, g, recs[2].ID, "a trimmed")
}
