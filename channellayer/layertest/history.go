package layertest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/chatterpro/chatterpro/channellayer"
)

// history returns the History of the layer and of its peer, or skips the
// rule (saying why) if the backend does not implement it.
func (e *env) history() (ha, hb channellayer.History, ok bool) {
	e.t.Helper()
	ha, ok = e.a.(channellayer.History)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.History: rule does not apply", e.a)
		return nil, nil, false
	}
	hb, ok = e.peer().(channellayer.History)
	if !ok {
		e.t.Fatalf("Layer implements channellayer.History, its peer %T does not", e.peer())
	}
	return ha, hb, true
}

// record sends a numbered message with GroupSendRecorded and checks what it
// returns: a valid ID, also the first field "id" of the body, the rest of
// the body kept.
func (e *env) record(h channellayer.History, group string, sender, n int) channellayer.Message {
	e.t.Helper()
	sent := e.seqMsg(sender, n)
	rec, err := h.GroupSendRecorded(e.ctx(waitFor), group, sent)
	if err != nil {
		e.t.Fatalf("GroupSendRecorded: %v", err)
	}
	if !channellayer.ValidID(rec.ID) {
		e.t.Fatalf("GroupSendRecorded returned ID %q, not a valid ID", rec.ID)
	}
	if rec.Type != sent.Type {
		e.t.Errorf("GroupSendRecorded returned type %q, want %q", rec.Type, sent.Type)
	}
	if prefix := `{"id":"` + rec.ID + `"`; !strings.HasPrefix(string(rec.Body), prefix) {
		e.t.Errorf("recorded body %s does not start with %s", rec.Body, prefix)
	}
	var body struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		seq
	}
	if err := json.Unmarshal(rec.Body, &body); err != nil {
		e.t.Fatalf("recorded body %s: %v", rec.Body, err)
	}
	if body.ID != rec.ID || body.Type != sent.Type || body.seq != (seq{sender, n}) {
		e.t.Errorf("recorded body %s, want id %q and the fields of %s", rec.Body, rec.ID, sent.Body)
	}
	return rec
}

func ids(ms []channellayer.Message) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return "[" + strings.Join(out, " ") + "]"
}

// same checks that got are want: IDs and bodies, in order.
func (e *env) same(what string, got, want []channellayer.Message) {
	e.t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].ID == want[i].ID && got[i].Type == want[i].Type && string(got[i].Body) == string(want[i].Body)
	}
	if !ok {
		e.t.Errorf("%s = %s, want %s", what, ids(got), ids(want))
		for i := range min(len(got), len(want)) {
			if string(got[i].Body) != string(want[i].Body) {
				e.t.Errorf("%s: message %d is %s, want %s", what, i, got[i].Body, want[i].Body)
				break
			}
		}
	}
}

func (e *env) recent(h channellayer.History, group string, n int, want []channellayer.Message) {
	e.t.Helper()
	got, err := h.Recent(e.ctx(waitFor), group, n)
	if err != nil {
		e.t.Fatalf("Recent(%q, %d): %v", group, n, err)
	}
	e.same(fmt.Sprintf("Recent(%d)", n), got, want)
}

func (e *env) since(h channellayer.History, group, id string, want []channellayer.Message) {
	e.t.Helper()
	got, err := h.Since(e.ctx(waitFor), group, id)
	if err != nil {
		e.t.Fatalf("Since(%q, %q): %v", group, id, err)
	}
	e.same(fmt.Sprintf("Since(%q)", id), got, want)
}

func (e *env) sinceUnknown(h channellayer.History, group, id, why string) {
	e.t.Helper()
	got, err := h.Since(e.ctx(waitFor), group, id)
	if !errors.Is(err, channellayer.ErrUnknownID) {
		e.t.Errorf("Since(%q) of %s ID: %s, %v; want %v", id, why, ids(got), err, channellayer.ErrUnknownID)
	}
}

// checkHistoryRecord: recorded messages get increasing IDs across
// processes, reach the members with their ID, and Recent returns the last
// ones oldest first.
func checkHistoryRecord(e *env) {
	ha, hb, ok := e.history()
	if !ok {
		return
	}
	g := e.name("room")
	ma, mb := e.member(e.a), e.member(e.peer())
	e.join(ma.l, g, ma.name)
	e.join(mb.l, g, mb.name)
	const n = 6
	var recs []channellayer.Message
	for i := range n {
		rec := e.record([]channellayer.History{ha, hb}[i%2], g, i%2, i)
		if len(recs) > 0 && channellayer.CompareID(recs[len(recs)-1].ID, rec.ID) >= 0 {
			e.t.Errorf("ID %q recorded after %q (on the other process) is not greater", rec.ID, recs[len(recs)-1].ID)
		}
		recs = append(recs, rec)
	}
	for _, m := range []member{ma, mb} {
		left := make(map[string]channellayer.Message)
		for _, r := range recs {
			left[r.ID] = r
		}
		for range n {
			got := e.recv(m.l, m.name)
			want, ok := left[got.ID]
			if !ok {
				e.t.Fatalf("member received %s with ID %q: not one of the recorded messages %s, or again", got.Body, got.ID, ids(recs))
			}
			if got.Type != want.Type || string(got.Body) != string(want.Body) {
				e.t.Errorf("member received %s (type %q), want the recorded body %s", got.Body, got.Type, want.Body)
			}
			delete(left, got.ID)
		}
		e.silent(m.l, m.name, "member after the recorded messages")
	}
	e.recent(ha, g, 3, recs[n-3:])
	e.recent(hb, g, n, recs)
	e.recent(hb, g, 100, recs)
	e.recent(ha, g, 0, nil)
	e.recent(ha, e.name("room"), 10, nil)
}

// checkHistorySince: Since returns exactly what came after an ID, and
// ErrUnknownID for malformed and unknown IDs.
func checkHistorySince(e *env) {
	ha, hb, ok := e.history()
	if !ok {
		return
	}
	g := e.name("room")
	var recs []channellayer.Message
	for i := range 5 {
		recs = append(recs, e.record(ha, g, 0, i))
	}
	for _, h := range []channellayer.History{ha, hb} {
		for i, r := range recs {
			e.since(h, g, r.ID, recs[i+1:])
		}
	}
	lastMS, _, _ := strings.Cut(recs[len(recs)-1].ID, "-")
	for _, bad := range []struct{ id, why string }{
		{"", "an empty"},
		{"garbage", "a malformed"},
		{"12-x", "a malformed"},
		{"1-0", "an unknown, long past"},
		{"99999999999999-0", "an unknown, future"},
		{lastMS + "-999999", "an unknown, near"},
	} {
		e.sinceUnknown(hb, g, bad.id, bad.why)
	}
	e.sinceUnknown(ha, e.name("room"), recs[0].ID, "another group's")
}

// checkHistoryTrim: a group keeps its last HistorySize messages; Since of a
// trimmed ID is ErrUnknownID.
func checkHistoryTrim(e *env) {
	ha, hb, ok := e.history()
	if !ok {
		return
	}
	g := e.name("room")
	size := e.s.HistorySize
	var recs []channellayer.Message
	for i := range size + 3 {
		recs = append(recs, e.record([]channellayer.History{ha, hb}[i%2], g, 0, i))
	}
	kept := recs[3:]
	e.recent(ha, g, size+10, kept)
	e.recent(hb, g, size, kept)
	for i := range 3 {
		e.sinceUnknown(hb, g, recs[i].ID, "a trimmed")
	}
	e.since(ha, g, kept[0].ID, kept[1:])
}

// checkHistoryCluster: concurrent recorders on two processes get distinct
// IDs, each increasing, and the history holds the latest in ID order.
func checkHistoryCluster(e *env) {
	ha, hb, ok := e.history()
	if !ok {
		return
	}
	g := e.name("room")
	const recorders, each = 4, 10
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []string
		errs []string
	)
	for r := range recorders {
		h := []channellayer.History{ha, hb}[r%2]
		wg.Go(func() {
			prev := ""
			for i := range each {
				rec, err := h.GroupSendRecorded(e.ctx(waitFor), g, e.seqMsg(r, i))
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Sprintf("recorder %d: GroupSendRecorded: %v", r, err))
				case prev != "" && channellayer.CompareID(prev, rec.ID) >= 0:
					errs = append(errs, fmt.Sprintf("recorder %d: ID %q after %q", r, rec.ID, prev))
				default:
					all = append(all, rec.ID)
				}
				mu.Unlock()
				prev = rec.ID
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		e.t.Fatalf("concurrent recorders:\n%s", strings.Join(errs, "\n"))
	}
	slices.SortFunc(all, channellayer.CompareID)
	for i := 1; i < len(all); i++ {
		if channellayer.CompareID(all[i-1], all[i]) == 0 {
			e.t.Errorf("ID %q was given twice", all[i])
		}
	}
	keep := min(len(all), e.s.HistorySize)
	got, err := hb.Recent(e.ctx(waitFor), g, keep)
	if err != nil {
		e.t.Fatalf("Recent: %v", err)
	}
	if ids(got) != "["+strings.Join(all[len(all)-keep:], " ")+"]" {
		e.t.Errorf("Recent(%d) = %s, want the latest IDs in order: %v", keep, ids(got), all[len(all)-keep:])
	}
}

// checkHistoryRecordAsync: GroupSendRecordedAsync records like
// GroupSendRecorded, calls done once per message in call order, and the
// messages of one caller reach members, and history, in that order.
func checkHistoryRecordAsync(e *env) {
	ra, ok := e.a.(channellayer.Recorder)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.Recorder: rule does not apply", e.a)
		return
	}
	ha, hb, ok := e.history()
	if !ok {
		e.t.Fatalf("%T implements channellayer.Recorder but not channellayer.History", e.a)
	}
	g := e.name("room")
	ma, mb := e.member(e.a), e.member(e.peer())
	e.join(ma.l, g, ma.name)
	e.join(mb.l, g, mb.name)
	n := min(20, e.s.Capacity) // members receive after all are sent
	type result struct {
		i   int
		rec channellayer.Message
		err error
	}
	results := make(chan result, 2*n)
	for i := range n {
		sent := e.seqMsg(0, i)
		ra.GroupSendRecordedAsync(g, sent, func(rec channellayer.Message, err error) {
			results <- result{i, rec, err}
		})
	}
	recs := make([]channellayer.Message, 0, n)
	for len(recs) < n {
		var r result
		select {
		case r = <-results:
		case <-e.ctx(waitFor).Done():
			e.t.Fatalf("GroupSendRecordedAsync: %d of %d done called within %v", len(recs), n, waitFor)
		}
		switch {
		case r.err != nil:
			e.t.Fatalf("GroupSendRecordedAsync of message %d: %v", r.i, r.err)
		case r.i != len(recs):
			e.t.Fatalf("done of message %d called after %d others: want call order", r.i, len(recs))
		case !channellayer.ValidID(r.rec.ID):
			e.t.Fatalf("message %d recorded with ID %q, not a valid ID", r.i, r.rec.ID)
		case len(recs) > 0 && channellayer.CompareID(recs[len(recs)-1].ID, r.rec.ID) >= 0:
			e.t.Errorf("message %d recorded with ID %q, not after %q", r.i, r.rec.ID, recs[len(recs)-1].ID)
		}
		if want := `{"id":"` + r.rec.ID + `"`; !strings.HasPrefix(string(r.rec.Body), want) {
			e.t.Errorf("recorded body %s does not start with %s", r.rec.Body, want)
		}
		recs = append(recs, r.rec)
	}
	select {
	case r := <-results:
		e.t.Fatalf("done of message %d called twice", r.i)
	default:
	}
	for _, m := range []member{ma, mb} {
		for i := range n {
			if got := e.recv(m.l, m.name); got.ID != recs[i].ID || string(got.Body) != string(recs[i].Body) {
				e.t.Fatalf("member's message %d: %s, want %s (lost, repeated or out of order)", i, got.Body, recs[i].Body)
			}
		}
		e.silent(m.l, m.name, "member after the recorded messages")
	}
	e.recent(hb, g, n, recs)
	e.since(ha, g, recs[0].ID, recs[1:])
}
