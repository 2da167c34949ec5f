package layertest

import (
	"context"
	"errors"
	"sync"

	"github.com/chatterpro/chatterpro/channellayer"
)

// checkRecovery: JoinSince while another process records without pause
// gives the joiner, through Messages and then the live messages that
// Recovery.Fresh keeps, every message recorded after the ID, in order, once:
// nothing repeated and nothing skipped between the history and the stream.
func checkRecovery(e *env) {
	_, hb, ok := e.history()
	if !ok {
		e.t.Skip("the backend does not implement channellayer.History")
	}
	g := e.name("recover")
	// Fewer than the history keeps, so the gap can be covered.
	total := e.s.HistorySize - 2
	before := total / 4
	var recorded []channellayer.Message
	for i := 0; i < before; i++ {
		recorded = append(recorded, e.record(hb, g, 1, i))
	}
	since := recorded[1].ID

	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() { // the other process goes on recording
		defer wg.Done()
		for i := before; i < total; i++ {
			m, err := hb.GroupSendRecorded(e.ctx(waitFor), g, e.seqMsg(1, i))
			if err != nil {
				e.t.Errorf("GroupSendRecorded: %v", err)
				return
			}
			mu.Lock()
			recorded = append(recorded, m)
			mu.Unlock()
		}
	}()
	ch := e.newChannel(e.a)
	rec, err := channellayer.JoinSince(e.ctx(waitFor), e.a, g, ch, since, 10)
	if err != nil {
		e.t.Fatalf("JoinSince: %v", err)
	}
	if !rec.Recovered {
		e.t.Fatalf("JoinSince(%s) not recovered, with %d of %d messages kept", since, total, e.s.HistorySize)
	}
	wg.Wait()
	if e.t.Failed() {
		return
	}
	got := append([]channellayer.Message(nil), rec.Messages...)
	for len(got) < total-2 {
		m := e.recv(e.a, ch)
		if m.Group != g {
			e.t.Errorf("live message has Group %q, want %q", m.Group, g)
		}
		if rec.Fresh(m) {
			got = append(got, m)
		}
	}
	// Live copies of messages the history read returned may still be on
	// their way (all of them when the recorder was done before the read,
	// and then the loop above took none): what else arrives must be such
	// a repeat.
	for range total + 1 {
		m, err := e.a.Receive(e.ctx(quiet), ch)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				e.t.Errorf("after every recorded message arrived: Receive(%q): %v, want %v", ch, err, context.DeadlineExceeded)
			}
			break
		}
		if rec.Fresh(m) {
			e.t.Errorf("after every recorded message arrived: a fresh message %s", m.Body)
		}
	}
	want := recorded[2:]
	if len(got) != len(want) {
		e.t.Fatalf("recovered %s, want %s", ids(got), ids(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || string(got[i].Body) != string(want[i].Body) {
			e.t.Fatalf("recovered %s, want %s", ids(got), ids(want))
		}
	}

	// Messages recorded after the channel joined and before the history was
	// read are both in Messages and in the stream: Fresh drops the repeats,
	// and keeps what comes after them.
	g2 := e.name("recover")
	first := e.record(hb, g2, 2, 0)
	ch2 := e.newChannel(e.a)
	e.join(e.a, g2, ch2) // JoinSince joins again: once is once
	twice := []channellayer.Message{e.record(hb, g2, 2, 1), e.record(hb, g2, 2, 2)}
	rec2, err := channellayer.JoinSince(e.ctx(waitFor), e.a, g2, ch2, first.ID, 10)
	if err != nil {
		e.t.Fatalf("JoinSince: %v", err)
	}
	if !rec2.Recovered || len(rec2.Messages) != 2 {
		e.t.Fatalf("JoinSince = %s, recovered %v; want the 2 messages after %s", ids(rec2.Messages), rec2.Recovered, first.ID)
	}
	after := e.record(hb, g2, 2, 3)
	for _, m := range append(twice, after) {
		got := e.recv(e.a, ch2)
		if got.ID != m.ID {
			e.t.Fatalf("live message %s, want %s", got.ID, m.ID)
		}
		if fresh := rec2.Fresh(got); fresh != (m.ID == after.ID) {
			e.t.Errorf("Fresh(%s) = %v: the repeats of Messages are not fresh, the next message is", got.ID, fresh)
		}
	}

	// An ID that cannot be resumed from gives the latest messages, not
	// recovered; live messages that repeat them are not fresh.
	for _, bad := range []string{"", "garbage", "0-1"} {
		ch := e.newChannel(e.a)
		rec, err := channellayer.JoinSince(e.ctx(waitFor), e.a, g, ch, bad, 3)
		if err != nil {
			e.t.Fatalf("JoinSince(%q): %v", bad, err)
		}
		if rec.Recovered && bad != "0-1" {
			e.t.Errorf("JoinSince(%q) recovered", bad)
		}
		if !rec.Recovered && len(rec.Messages) != 3 {
			e.t.Errorf("JoinSince(%q) gave %d messages, want the latest 3", bad, len(rec.Messages))
		}
	}
}
