package consumer

import (
	"context"
	"errors"
	"runtime/debug"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/wire"
)

// The consumer's one-at-a-time order: every call into the consumer
// (Connect, Receive, the handlers of layer events, Disconnect, functions
// run by Do) holds c.mu, so a consumer needs no lock for its own state, and
// the state below needs none of its own either.

// handlerTable holds the handlers of layer event types (Conn.On). It is
// owned by whoever holds the consumer's order (Conn.mu): On is documented
// to be called only from there, and dispatch looks up under it.
type handlerTable struct {
	list     []typeHandler // a few: smaller than a map, and as fast
	lastType string        // the type of the last event looked up
	lastH    EventHandler  // and its handler: a burst of one type skips the lookup
}

type typeHandler struct {
	typ string
	h   EventHandler
}

// set registers h for typ, replacing any earlier one.
func (t *handlerTable) set(typ string, h EventHandler) {
	t.lastType, t.lastH = "", nil
	for i := range t.list {
		if t.list[i].typ == typ {
			t.list[i].h = h
			return
		}
	}
	t.list = append(t.list, typeHandler{typ, h})
}

// get returns the handler of events of type typ, nil if none.
func (t *handlerTable) get(typ string) EventHandler {
	if h := t.lastH; h != nil && typ == t.lastType {
		return h
	}
	for _, th := range t.list {
		if th.typ == typ {
			t.lastType, t.lastH = typ, th.h
			return th.h
		}
	}
	return nil
}

// call runs fn in the consumer's order, turning an error or a panic into a
// 1011 close.
func (c *Conn) call(what string, fn func(ctx context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.recoverPanic(what)
	if err := fn(c.ctx); err != nil {
		c.failed(what, err)
	}
}

// handleAll hands layer events to the handlers of their types, in order,
// like call but under one lock for all of them and without a closure per
// event. It stops when the connection is closing, and reports whether it
// handed over every event.
func (c *Conn) handleAll(msgs []channellayer.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if c.ctx.Err() != nil {
			return false
		}
		c.handle(m)
	}
	return true
}

// handle hands one layer event to the handler of its type. The caller
// holds c.mu.
func (c *Conn) handle(m channellayer.Message) {
	defer c.recoverPanic("event")
	h := c.handlers.get(m.Type)
	if m.ID != "" && c.resumes != nil && c.repeat(m) {
		return // a repeat of what GroupAddSince returned
	}
	if h == nil {
		c.srv.unhandled(c, m.Type)
		return
	}
	if err := h(c.ctx, c, m); err != nil {
		c.failed("event "+m.Type, err)
	}
}

// recoverPanic, deferred, turns a panic in the consumer into a 1011 close.
func (c *Conn) recoverPanic(what string) {
	if p := recover(); p != nil {
		c.Logger().Error("consumer panicked; closing connection", "in", what, "panic", p, "stack", string(debug.Stack()))
		c.wire.Close(StatusInternalError, "internal error", wire.Now)
	}
}

// failed closes the connection after the consumer returned an error.
func (c *Conn) failed(what string, err error) {
	if c.ctx.Err() != nil {
		return // closing anyway
	}
	c.Logger().Error("consumer failed; closing connection", "in", what, "err", err)
	c.wire.Close(StatusInternalError, "internal error", wire.Now)
}

// layerFailed closes the connection after its channel failed.
func (c *Conn) layerFailed(err error) {
	switch {
	case c.ctx.Err() != nil:
	case errors.Is(err, channellayer.ErrOverflow):
		c.wire.Close(StatusTryAgainLater, "slow consumer", wire.Now)
	default:
		c.Logger().Error("receiving from the layer failed; closing connection", "err", err)
		c.wire.Close(StatusInternalError, "internal error", wire.Now)
	}
}
