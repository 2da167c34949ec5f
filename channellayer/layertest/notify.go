package layertest

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// checkNotify: a Notifier calls back on every arrival (direct, group, from
// another process, overflow) and when the channel ends; TryReceive returns
// what waits, in order, without waiting; a callback installed while
// messages wait is called at once.
func checkNotify(e *env) {
	a, b := e.a, e.peer()
	n, ok := a.(channellayer.Notifier)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.Notifier: rule does not apply", a)
		return
	}
	c := e.newChannel(a)
	var calls atomic.Int64
	waitCalls := func(atLeast int64, what string) {
		e.t.Helper()
		testkit.EventuallyNil(e.t, waitFor, func() error {
			if n := calls.Load(); n < atLeast {
				return fmt.Errorf("%d callbacks, want at least %d", n, atLeast)
			}
			return nil
		}, what)
	}
	tryRecv := func() (channellayer.Message, bool) {
		e.t.Helper()
		m, ok, err := n.TryReceive(c)
		if err != nil {
			e.t.Fatalf("TryReceive: %v", err)
		}
		return m, ok
	}

	if _, ok := tryRecv(); ok {
		e.t.Fatal("TryReceive on a new channel returned a message")
	}
	// Installed while a message waits: called at once.
	e.send(a, c, e.seqMsg(0, 0))
	if err := n.Notify(c, func() { calls.Add(1) }); err != nil {
		e.t.Fatalf("Notify: %v", err)
	}
	waitCalls(1, "Notify with a message waiting")

	g := e.name("g")
	e.join(a, g, c)
	e.send(a, c, e.seqMsg(0, 1))
	e.groupSend(a, g, e.seqMsg(0, 2))
	e.groupSend(b, g, e.seqMsg(0, 3))
	waitCalls(4, "a direct send and group sends from both processes")
	for i := 0; i < 4; i++ {
		var m channellayer.Message
		testkit.Eventually(e.t, waitFor, func() bool {
			var ok bool
			m, ok = tryRecv()
			return ok
		}, fmt.Sprintf("TryReceive of message %d", i))
		if string(m.Body) != string(e.seqMsg(0, i).Body) {
			e.t.Fatalf("TryReceive #%d = %s, want %s", i, m.Body, e.seqMsg(0, i).Body)
		}
	}
	if m, ok := tryRecv(); ok {
		e.t.Fatalf("TryReceive on a drained channel = %s", m.Body)
	}

	// An overflow is announced, and TryReceive reports it.
	e.fill(a, c)
	before := calls.Load()
	e.groupSend(a, g, e.seqMsg(1, 0))
	waitCalls(before+1, "an overflowing group send")
	if _, _, err := n.TryReceive(c); !errors.Is(err, channellayer.ErrOverflow) {
		e.t.Fatalf("TryReceive after an overflow: %v, want %v", err, channellayer.ErrOverflow)
	}

	// The channel's end is announced too.
	before = calls.Load()
	if err := a.DiscardChannel(e.ctx(waitFor), c); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	waitCalls(before+1, "DiscardChannel")
	if _, _, err := n.TryReceive(c); err == nil {
		e.t.Fatal("TryReceive on a discarded channel: no error")
	}
}

// checkDrain: a Drainer's TryReceiveAll appends everything waiting, in
// order, to the caller's slice and leaves the channel empty; expired
// messages are left out; an overflow and a discarded channel are errors,
// like TryReceive's.
func checkDrain(e *env) {
	a, b := e.a, e.peer()
	d, ok := a.(channellayer.Drainer)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.Drainer: rule does not apply", a)
		return
	}
	c := e.newChannel(a)
	drain := func(buf []channellayer.Message) []channellayer.Message {
		e.t.Helper()
		got, err := d.TryReceiveAll(c, buf)
		if err != nil {
			e.t.Fatalf("TryReceiveAll: %v", err)
		}
		return got
	}
	if got := drain(nil); len(got) != 0 {
		e.t.Fatalf("TryReceiveAll on a new channel returned %d messages", len(got))
	}

	g := e.name("g")
	e.join(a, g, c)
	e.send(a, c, e.seqMsg(0, 0))
	e.send(b, c, e.seqMsg(0, 1))
	e.groupSend(a, g, e.seqMsg(0, 2))
	e.groupSend(b, g, e.seqMsg(0, 3))
	// The messages from the peer arrive in their own time: collect until
	// all four are in, appending behind a message already in the slice.
	first := e.seqMsg(9, 9)
	got := []channellayer.Message{first}
	testkit.Poll(waitFor, func() error {
		if got = drain(got); len(got) < 5 {
			return errors.New("not all in")
		}
		return nil
	})
	if len(got) != 5 || string(got[0].Body) != string(first.Body) {
		e.t.Fatalf("TryReceiveAll returned %d messages, want the caller's one and 4 more", len(got))
	}
	// Each message once. Order holds per sender and path only: a's direct
	// send (local) comes before a's group send; b's two messages travel
	// different ways (its directed send and the group's pub/sub channel,
	// on different shards in a cluster), so their order is not checked.
	at := make(map[string]int)
	for i, m := range got[1:] {
		at[string(m.Body)] = i
	}
	for i := 0; i < 4; i++ {
		if _, ok := at[string(e.seqMsg(0, i).Body)]; !ok {
			e.t.Fatalf("TryReceiveAll returned %d messages without %s", len(got)-1, e.seqMsg(0, i).Body)
		}
	}
	if at[string(e.seqMsg(0, 0).Body)] > at[string(e.seqMsg(0, 2).Body)] {
		e.t.Fatalf("TryReceiveAll returned a's group send before a's direct send, sent first")
	}
	if got := drain(nil); len(got) != 0 {
		e.t.Fatalf("TryReceiveAll on a drained channel returned %d messages", len(got))
	}

	// Expired messages are left out, fresh ones behind them returned.
	e.send(a, c, e.seqMsg(1, 0))
	e.s.Sleep(e.s.Expiry + e.s.Expiry/2)
	fresh := e.seqMsg(1, 1)
	e.send(a, c, fresh)
	if got := drain(nil); len(got) != 1 || string(got[0].Body) != string(fresh.Body) {
		e.t.Fatalf("TryReceiveAll after an expiry returned %d messages, want only %s", len(got), fresh.Body)
	}

	// An overflow is an error; the channel works again after it. The group
	// send may take its time (through a server): its arrival is awaited
	// with Notify, as draining would make room for it.
	n, ok := a.(channellayer.Notifier)
	if !ok {
		e.t.Fatalf("%T implements Drainer but not Notifier", a)
	}
	var calls atomic.Int64
	if err := n.Notify(c, func() { calls.Add(1) }); err != nil {
		e.t.Fatalf("Notify: %v", err)
	}
	e.fill(a, c)
	before := calls.Load()
	e.groupSend(a, g, e.seqMsg(2, 0))
	testkit.Eventually(e.t, waitFor, func() bool { return calls.Load() != before }, "the overflowing group send's arrival")
	if got, err := d.TryReceiveAll(c, nil); !errors.Is(err, channellayer.ErrOverflow) || len(got) != 0 {
		e.t.Fatalf("TryReceiveAll after an overflow: %d messages, %v; want none and %v", len(got), err, channellayer.ErrOverflow)
	}
	if got := drain(nil); len(got) != e.s.Capacity {
		e.t.Fatalf("TryReceiveAll after the overflow was reported: %d messages, want the %d that filled the channel", len(got), e.s.Capacity)
	}

	if err := a.DiscardChannel(e.ctx(waitFor), c); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	if _, err := d.TryReceiveAll(c, nil); err == nil {
		e.t.Fatal("TryReceiveAll on a discarded channel: no error")
	}
}
