package layertest

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// checkNotify: a Notifier calls back on every arrival (direct, group, from
// another process, overflow) and when the channel ends; TryReceive returns
// what waits, in order, without waiting; a callback installed while
// messages wait is called at once.
func checkNotify(e *env) {
	a, b := e.a, e.peer()
	n, ok := a.(channellayer.Notifier)
	if !ok {
		e.t.Logf("%T does not implement Notifier: nothing to check", a)
		return
	}
	c := e.newChannel(a)
	var calls atomic.Int64
	waitCalls := func(atLeast int64, what string) {
		e.t.Helper()
		deadline := time.Now().Add(waitFor)
		for calls.Load() < atLeast {
			if time.Now().After(deadline) {
				e.t.Fatalf("%s: %d callbacks, want at least %d", what, calls.Load(), atLeast)
			}
			time.Sleep(5 * time.Millisecond)
		}
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
	deadline := time.Now().Add(waitFor)
	for i := 0; i < 4; i++ {
		m, ok := tryRecv()
		if !ok {
			if time.Now().After(deadline) {
				e.t.Fatalf("TryReceive found message %d missing", i)
			}
			i--
			time.Sleep(5 * time.Millisecond)
			continue
		}
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
