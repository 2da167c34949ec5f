package layertest

import (
	"context"
	"errors"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// checkNewChannel: channel names are non-empty and unique across processes.
func checkNewChannel(e *env) {
	seen := make(map[string]bool)
	for range 50 {
		for _, l := range e.both() {
			name := e.newChannel(l)
			if seen[name] {
				e.t.Fatalf("NewChannel returned %q twice", name)
			}
			seen[name] = true
		}
	}
}

// checkSendReceive: Send delivers to a channel on any process, in order;
// a waiting Receive wakes up for a message.
func checkSendReceive(e *env) {
	a, b := e.a, e.peer()
	c := e.newChannel(a)
	m1, m2 := e.seqMsg(0, 1), e.seqMsg(0, 2)
	e.send(a, c, m1)
	e.send(a, c, m2)
	for _, want := range []channellayer.Message{m1, m2} {
		got := e.recv(a, c)
		if got.Type != want.Type || string(got.Body) != string(want.Body) || got.ID != "" {
			e.t.Fatalf("Receive = %+v (body %s), want type %q, body %s, no ID", got, got.Body, want.Type, want.Body)
		}
	}

	// From another process.
	m3 := e.seqMsg(1, 3)
	e.send(b, c, m3)
	e.recvBody(a, c, m3)

	// A Receive that is already waiting.
	got := make(chan channellayer.Message, 1)
	errc := make(chan error, 1)
	ids := make(chan uint64, 1)
	go func() {
		ids <- testkit.GoroutineID()
		m, err := a.Receive(e.ctx(waitFor), c)
		if err != nil {
			errc <- err
			return
		}
		got <- m
	}()
	testkit.WaitBlocked(e.t, waitFor, <-ids, "a Receive waiting on an empty channel")
	m4 := e.seqMsg(1, 4)
	e.send(b, c, m4)
	select {
	case m := <-got:
		if string(m.Body) != string(m4.Body) {
			e.t.Fatalf("waiting Receive = %s, want %s", m.Body, m4.Body)
		}
	case err := <-errc:
		e.t.Fatalf("waiting Receive: %v", err)
	}
	e.silent(a, c, "after all sent messages were received")
}

// checkReceiveContext: Receive returns ctx.Err() promptly.
func checkReceiveContext(e *env) {
	for _, l := range e.both() {
		c := e.newChannel(l)

		ctx, cancel := context.WithCancel(e.t.Context())
		cancel()
		e.within(prompt, "Receive with a cancelled context", func() {
			if _, err := l.Receive(ctx, c); !errors.Is(err, context.Canceled) {
				e.t.Errorf("Receive with a cancelled context: %v, want %v", err, context.Canceled)
			}
		})

		e.within(prompt, "Receive with a 50ms deadline", func() {
			if _, err := l.Receive(e.ctx(50*time.Millisecond), c); !errors.Is(err, context.DeadlineExceeded) {
				e.t.Errorf("Receive past its deadline: %v, want %v", err, context.DeadlineExceeded)
			}
		})

		ctx, cancel = context.WithCancel(e.t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		e.within(prompt, "Receive cancelled while waiting", func() {
			if _, err := l.Receive(ctx, c); !errors.Is(err, context.Canceled) {
				e.t.Errorf("Receive cancelled while waiting: %v, want %v", err, context.Canceled)
			}
		})

		// The channel still works after a cancelled Receive.
		m := e.seqMsg(0, 1)
		e.send(l, c, m)
		e.recvBody(l, c, m)
	}
}

// checkNoChannel: unknown and discarded channels are refused.
func checkNoChannel(e *env) {
	a := e.a
	m := e.seqMsg(0, 1)
	if err := a.Send(e.ctx(waitFor), "layertest-no-such-channel", m); err == nil {
		e.t.Error("Send to a channel that was never created succeeded")
	}
	if _, err := a.Receive(e.ctx(waitFor), "layertest-no-such-channel"); !errors.Is(err, channellayer.ErrNoChannel) {
		e.t.Errorf("Receive on a channel that was never created: %v, want %v", err, channellayer.ErrNoChannel)
	}

	c := e.newChannel(a)
	e.send(a, c, m) // a message left in it is dropped with it
	if err := a.DiscardChannel(e.ctx(waitFor), c); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	if err := a.Send(e.ctx(waitFor), c, m); !errors.Is(err, channellayer.ErrNoChannel) {
		e.t.Errorf("Send to a discarded channel: %v, want %v", err, channellayer.ErrNoChannel)
	}
	if got, err := a.Receive(e.ctx(waitFor), c); !errors.Is(err, channellayer.ErrNoChannel) {
		e.t.Errorf("Receive on a discarded channel: %s, %v, want %v", got.Body, err, channellayer.ErrNoChannel)
	}
	if err := a.GroupAdd(e.ctx(waitFor), e.name("g"), c); !errors.Is(err, channellayer.ErrNoChannel) {
		e.t.Errorf("GroupAdd of a discarded channel: %v, want %v", err, channellayer.ErrNoChannel)
	}

	// A Receive waiting when its channel is discarded returns.
	c = e.newChannel(a)
	errc := make(chan error, 1)
	ids := make(chan uint64, 1)
	go func() {
		ids <- testkit.GoroutineID()
		_, err := a.Receive(e.ctx(waitFor), c)
		errc <- err
	}()
	testkit.WaitBlocked(e.t, waitFor, <-ids, "a Receive waiting on an empty channel")
	if err := a.DiscardChannel(e.ctx(waitFor), c); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, channellayer.ErrNoChannel) {
			e.t.Errorf("Receive waiting while its channel was discarded: %v, want %v", err, channellayer.ErrNoChannel)
		}
	case <-time.After(prompt):
		e.t.Errorf("Receive waiting while its channel was discarded did not return within %v", prompt)
	}
}

// checkInvalid: empty names and messages are refused with ErrInvalid.
func checkInvalid(e *env) {
	a := e.a
	c := e.newChannel(a)
	g := e.name("g")
	e.join(a, g, c)
	if err := a.Send(e.ctx(waitFor), c, channellayer.Message{}); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("Send of an empty message: %v, want %v", err, channellayer.ErrInvalid)
	}
	if err := a.GroupSend(e.ctx(waitFor), g, channellayer.Message{}); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("GroupSend of an empty message: %v, want %v", err, channellayer.ErrInvalid)
	}
	if err := a.GroupAdd(e.ctx(waitFor), "", c); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("GroupAdd to an empty group name: %v, want %v", err, channellayer.ErrInvalid)
	}
	e.silent(a, c, "after invalid sends")
}

// checkClosed: every call on a closed layer returns ErrClosed, a waiting
// Receive included.
func checkClosed(e *env) {
	a := e.a
	c := e.newChannel(a)
	g := e.name("g")
	e.join(a, g, c)
	errc := make(chan error, 1)
	ids := make(chan uint64, 1)
	go func() {
		ids <- testkit.GoroutineID()
		_, err := a.Receive(e.ctx(waitFor), c)
		errc <- err
	}()
	testkit.WaitBlocked(e.t, waitFor, <-ids, "a Receive waiting on an empty channel")

	e.within(waitFor, "Close", func() {
		if err := a.Close(e.ctx(waitFor)); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	select {
	case err := <-errc:
		if !errors.Is(err, channellayer.ErrClosed) {
			e.t.Errorf("Receive waiting during Close: %v, want %v", err, channellayer.ErrClosed)
		}
	case <-time.After(prompt):
		e.t.Fatalf("Receive waiting during Close did not return within %v", prompt)
	}

	m := e.seqMsg(0, 1)
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"NewChannel", func(ctx context.Context) error { _, err := a.NewChannel(ctx); return err }},
		{"Send", func(ctx context.Context) error { return a.Send(ctx, c, m) }},
		{"Receive", func(ctx context.Context) error { _, err := a.Receive(ctx, c); return err }},
		{"GroupAdd", func(ctx context.Context) error { return a.GroupAdd(ctx, g, c) }},
		{"GroupSend", func(ctx context.Context) error { return a.GroupSend(ctx, g, m) }},
	}
	if h, ok := a.(channellayer.History); ok {
		calls = append(calls, struct {
			name string
			call func(ctx context.Context) error
		}{"GroupSendRecorded", func(ctx context.Context) error { _, err := h.GroupSendRecorded(ctx, g, m); return err }})
	}
	if p, ok := a.(channellayer.Presence); ok {
		calls = append(calls, struct {
			name string
			call func(ctx context.Context) error
		}{"Track", func(ctx context.Context) error { return p.Track(ctx, g, "k", nil, time.Minute) }})
	}
	for _, c := range calls {
		e.within(prompt, c.name+" after Close", func() {
			if err := c.call(e.ctx(prompt)); !errors.Is(err, channellayer.ErrClosed) {
				e.t.Errorf("%s after Close: %v, want %v", c.name, err, channellayer.ErrClosed)
			}
		})
	}
}
