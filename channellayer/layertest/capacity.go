package layertest

import (
	"errors"

	"github.com/chatterpro/chatterpro/channellayer"
)

// fill sends Capacity numbered messages to a channel of l, from l.
func (e *env) fill(l channellayer.Layer, channel string) {
	e.t.Helper()
	for i := range e.s.Capacity {
		if err := l.Send(e.ctx(waitFor), channel, e.seqMsg(0, i)); err != nil {
			e.t.Fatalf("Send %d of %d (the capacity): %v", i+1, e.s.Capacity, err)
		}
	}
}

// checkCapacity: a channel holds Capacity messages; Send to a full channel
// returns ErrChannelFull and does not flag it as overflowed.
func checkCapacity(e *env) {
	a := e.a
	c := e.newChannel(a)
	e.fill(a, c)
	extra := e.seqMsg(1, 0)
	for range 2 {
		if err := a.Send(e.ctx(waitFor), c, extra); !errors.Is(err, channellayer.ErrChannelFull) {
			e.t.Fatalf("Send to a channel holding its capacity of %d: %v, want %v", e.s.Capacity, err, channellayer.ErrChannelFull)
		}
	}
	// Not an overflow: the messages are all there, in order.
	e.recvBody(a, c, e.seqMsg(0, 0))
	e.send(a, c, extra) // room for one again
	if err := a.Send(e.ctx(waitFor), c, extra); !errors.Is(err, channellayer.ErrChannelFull) {
		e.t.Fatalf("Send to a channel full again: %v, want %v", err, channellayer.ErrChannelFull)
	}
	for i := 1; i < e.s.Capacity; i++ {
		e.recvBody(a, c, e.seqMsg(0, i))
	}
	e.recvBody(a, c, extra)
	e.silent(a, c, "after the channel was emptied")
}

// checkGroupOverflow: a group send skips a full channel and flags it, so its
// next Receive returns ErrOverflow; the other members get the message and
// the sender does not wait.
func checkGroupOverflow(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	full, healthy, remote := e.member(a), e.member(a), e.member(b)
	e.fill(a, full.name)
	for _, m := range []member{full, healthy, remote} {
		e.join(m.l, g, m.name)
	}
	m1, m2 := e.seqMsg(1, 1), e.seqMsg(2, 1)
	e.within(prompt, "GroupSend to a group with a full channel", func() {
		e.groupSend(a, g, m1)
	})
	e.within(prompt, "GroupSend to a group with a full channel, from another process", func() {
		e.groupSend(b, g, m2)
	})
	e.recvSet(healthy, m1, m2)
	e.recvSet(remote, m1, m2)
	e.silent(healthy.l, healthy.name, "healthy member") // also gives the full one's delivery time
	if got, err := a.Receive(e.ctx(waitFor), full.name); !errors.Is(err, channellayer.ErrOverflow) {
		e.t.Errorf("Receive on a full channel that missed a group message: %s, %v; want %v", got.Body, err, channellayer.ErrOverflow)
	}
	// The others were not flagged.
	m3 := e.seqMsg(1, 2)
	e.groupSend(a, g, m3)
	e.recvBody(healthy.l, healthy.name, m3)
	e.recvBody(remote.l, remote.name, m3)
}

// checkExpiry: a message older than Expiry is not received, whether sent or
// group sent.
func checkExpiry(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	c := e.newChannel(a)
	e.join(a, g, c)
	e.send(a, c, e.seqMsg(0, 0))
	e.send(b, c, e.seqMsg(0, 1))
	e.groupSend(b, g, e.seqMsg(0, 2))
	// Wait for the group message to be delivered before the clock starts.
	d := e.s.Expiry + e.s.Expiry/2 + quiet
	e.s.Sleep(d)
	fresh := e.seqMsg(1, 0)
	e.send(a, c, fresh)
	got := e.recv(a, c)
	if string(got.Body) != string(fresh.Body) {
		e.t.Errorf("after %v (expiry %v), Receive = %s, want %s: the older messages should have expired", d, e.s.Expiry, got.Body, fresh.Body)
	}
}

// checkExpiryFreesCapacity: expired messages make room in a full channel.
func checkExpiryFreesCapacity(e *env) {
	a := e.a
	c := e.newChannel(a)
	e.fill(a, c)
	e.s.Sleep(e.s.Expiry + e.s.Expiry/2)
	fresh := e.seqMsg(1, 0)
	if err := a.Send(e.ctx(waitFor), c, fresh); err != nil {
		e.t.Fatalf("Send to a channel whose messages all expired: %v", err)
	}
	e.recvBody(a, c, fresh)
	e.silent(a, c, "after the only fresh message")
}
