package layertest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// checkNotify: a Notifier calls back on every arrival (direct, group, from
// another process, overflow) and when the channel ends, with the number of
// messages then waiting (1 on an empty channel, 0 for an overflow, the end,
// or a callback installed while messages wait, which is called at once);
// TryReceive returns what waits, in order, without waiting.
func checkNotify(e *env) {
	a, b := e.a, e.peer()
	n, ok := a.(channellayer.Notifier)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.Notifier: rule does not apply", a)
		return
	}
	c := e.newChannel(a)
	var mu sync.Mutex
	var calls []int // the waiting counts, in the order of the calls
	record := func(waiting int) {
		mu.Lock()
		calls = append(calls, waiting)
		mu.Unlock()
	}
	// waitCalls waits for the callbacks after the first from and returns
	// their counts once there are want of them.
	waitCalls := func(from, want int, what string) []int {
		e.t.Helper()
		var got []int
		testkit.EventuallyNil(e.t, waitFor, func() error {
			mu.Lock()
			got = slices.Clone(calls[min(from, len(calls)):])
			mu.Unlock()
			if len(got) < want {
				return fmt.Errorf("%d callbacks %v, want %d", len(got), got, want)
			}
			return nil
		}, what)
		return got
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
	// Installed while a message waits: called at once, with 0.
	e.send(a, c, e.seqMsg(0, 0))
	if err := n.Notify(c, record); err != nil {
		e.t.Fatalf("Notify: %v", err)
	}
	if got := waitCalls(0, 1, "Notify with a message waiting"); got[0] != 0 {
		e.t.Fatalf("callback of Notify with a message waiting: waiting %d, want 0", got[0])
	}

	g := e.name("g")
	e.join(a, g, c)
	e.send(a, c, e.seqMsg(0, 1))
	e.groupSend(a, g, e.seqMsg(0, 2))
	e.groupSend(b, g, e.seqMsg(0, 3))
	got := waitCalls(1, 3, "a direct send and group sends from both processes")
	if !slices.Equal(got, []int{2, 3, 4}) {
		e.t.Fatalf("callbacks of three arrivals behind one waiting message: waiting %v, want [2 3 4]", got)
	}
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

	// The first arrival on the drained channel finds it empty.
	e.groupSend(b, g, e.seqMsg(0, 4))
	if got := waitCalls(4, 1, "a group send to a drained channel"); got[0] != 1 {
		e.t.Fatalf("callback of an arrival on an empty channel: waiting %d, want 1", got[0])
	}
	if _, ok := tryRecv(); !ok {
		e.t.Fatal("TryReceive after a group send to a drained channel: nothing")
	}

	// An overflow is announced with 0, and TryReceive reports it.
	e.fill(a, c)
	for i, w := range waitCalls(5, e.s.Capacity, "filling the channel") {
		if w != i+1 {
			e.t.Fatalf("callback of send %d filling an empty channel: waiting %d, want %d", i+1, w, i+1)
		}
	}
	before := 5 + e.s.Capacity
	e.groupSend(a, g, e.seqMsg(1, 0))
	if got := waitCalls(before, 1, "an overflowing group send"); got[0] != 0 {
		e.t.Fatalf("callback of an overflow: waiting %d, want 0", got[0])
	}
	if _, _, err := n.TryReceive(c); !errors.Is(err, channellayer.ErrOverflow) {
		e.t.Fatalf("TryReceive after an overflow: %v, want %v", err, channellayer.ErrOverflow)
	}

	// The channel's end is announced too.
	if err := a.DiscardChannel(e.ctx(waitFor), c); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	if got := waitCalls(before+1, 1, "DiscardChannel"); got[0] != 0 {
		e.t.Fatalf("callback of DiscardChannel: waiting %d, want 0", got[0])
	}
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
	if err := n.Notify(c, func(int) { calls.Add(1) }); err != nil {
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
