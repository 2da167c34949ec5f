package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/dispatch"
	"github.com/chatterpro/chatterpro/consumer/internal/outq"
	"github.com/chatterpro/chatterpro/consumer/internal/ping"
	"github.com/chatterpro/chatterpro/consumer/internal/poll"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
)

// Conn is a consumer's handle on its connection: send frames, close, join
// groups, read the scope. Send, SendJSON and Close are safe to call from any
// goroutine and never block; the other methods are meant for the consumer's
// own methods and handlers.
type Conn struct {
	srv      *Server
	scope    Scope
	consumer Consumer
	channel  string

	ctx    context.Context // cancelled when the connection starts closing (see closeWith)
	cancel context.CancelFunc

	mu       sync.Mutex    // serializes calls into the consumer
	handlers []typeHandler // a few: smaller than a map, and as fast
	lastType string        // the type of the last event handled, under mu
	lastH    EventHandler  // and its handler: a burst of one type skips the lookup

	out *outq.Queue
	t   Transport

	closeOnce   sync.Once
	closeCode   StatusCode
	closeReason string
	closeMode   closeMode
	started     atomic.Bool // serve has begun: the transport exists
	closerOnce  sync.Once

	// Goroutines besides the reader run only while they have work: the
	// writer while frames wait, the dispatcher while layer events wait,
	// the closer once, a ping. end stops them and waits for them.
	tasks tasks.Group
	disp  dispatch.Dispatcher // layer events to the consumer

	// What the writer and a woken reader run, as func values made once
	// per connection: "go c.runFlush()" would allocate a closure every
	// time, "go c.goFlush()" allocates nothing.
	goFlush, goRead func()

	ping ping.Entry // the connection's place in the server's pinger

	// A watched connection has a reader goroutine only while its socket
	// has bytes (see package poll).
	rd poll.Handle

	// Under mu: joins "since" an ID whose live repeats are dropped (see
	// GroupAddSince), and the state of the JSON convention (see json.go).
	resumes map[string]*channellayer.Recovery
	frames  *frameState
	tracked []string // groups of Track
}

// Scope describes the connection.
func (c *Conn) Scope() *Scope { return &c.scope }

// Channel is the connection's channel name on the layer: send to it to reach
// this consumer from anywhere.
func (c *Conn) Channel() string { return c.channel }

// Layer is the channel layer the connection is on.
func (c *Conn) Layer() channellayer.Layer { return c.srv.layer }

// Logger returns the server's logger with this connection's attributes.
// It is built when asked for: idle connections keep no logger of their own.
func (c *Conn) Logger() *slog.Logger { return c.srv.log.With("conn", c.channel, "path", c.scope.Path) }

// On registers the handler for layer events of type typ, replacing any
// earlier one. Call it from the consumer's methods and handlers, or from a
// function run by Do: never from another goroutine directly. Events of a
// type without handler are dropped, counted (Options.OnUnhandled) and
// logged at warn level, once per type and server.
func (c *Conn) On(typ string, h EventHandler) {
	c.lastType, c.lastH = "", nil
	for i := range c.handlers {
		if c.handlers[i].typ == typ {
			c.handlers[i].h = h
			return
		}
	}
	c.handlers = append(c.handlers, typeHandler{typ, h})
}

type typeHandler struct {
	typ string
	h   EventHandler
}

// handler returns the handler of events of type typ, nil if none.
func (c *Conn) handler(typ string) EventHandler {
	for _, th := range c.handlers {
		if th.typ == typ {
			return th.h
		}
	}
	return nil
}

// Send queues a text frame. It never blocks: if the outgoing queue is full
// the connection is closed with 1013 and ErrSlow is returned. The bytes must
// not be modified afterwards; the same slice may be sent to many connections.
func (c *Conn) Send(text []byte) error {
	writer, err := c.out.Push(text)
	switch err {
	case nil:
	case outq.ErrFull:
		c.closeWith(StatusTryAgainLater, "slow consumer", closeNow)
		return ErrSlow
	default:
		return ErrClosed
	}
	if writer {
		c.startWriter()
	}
	return nil
}

// SendJSON encodes v and queues it as a text frame (see Send).
func (c *Conn) SendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("consumer: encoding frame: %w", err)
	}
	return c.Send(b)
}

// Close closes the connection with a code and reason after the frames
// already queued are written. It returns at once.
func (c *Conn) Close(code StatusCode, reason string) {
	c.closeWith(code, reason, closeFlush)
}

// GroupAdd joins a group; the connection leaves it when it closes.
func (c *Conn) GroupAdd(ctx context.Context, group string) error {
	return c.srv.layer.GroupAdd(ctx, group, c.channel)
}

// GroupDiscard leaves a group.
func (c *Conn) GroupDiscard(ctx context.Context, group string) error {
	delete(c.resumes, group)
	return c.srv.layer.GroupDiscard(ctx, group, c.channel)
}

// GroupSend sends a layer event to every member of a group.
func (c *Conn) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	return c.srv.layer.GroupSend(ctx, group, m)
}

// GroupSendOthers sends a layer event to every member of a group except
// this connection (Phoenix's broadcast_from), encoded once like GroupSend.
// The layer must implement channellayer.ExceptSender (both backends do).
func (c *Conn) GroupSendOthers(ctx context.Context, group string, m channellayer.Message) error {
	x, ok := c.srv.layer.(channellayer.ExceptSender)
	if !ok {
		return fmt.Errorf("consumer: the layer %T cannot send to a group except one channel (channellayer.ExceptSender)", c.srv.layer)
	}
	return x.GroupSendExcept(ctx, group, m, c.channel)
}

// GroupAddSince joins a group "since" a message ID the client already has
// (from a previous connection, for instance) and returns what it missed:
// everything the group's history recorded after since, with Recovered set,
// or, if since is empty or the history no longer reaches back to it, the
// latest recent messages with Recovered false. Live events of the group
// that repeat a message of the returned Messages never reach a handler:
// send Messages first, then the stream goes on with nothing repeated and
// nothing skipped. The layer must implement channellayer.History.
func (c *Conn) GroupAddSince(ctx context.Context, group, since string, recent int) (channellayer.Recovery, error) {
	rec, err := channellayer.JoinSince(ctx, c.srv.layer, group, c.channel, since, recent)
	if err != nil {
		return rec, err
	}
	if c.resumes == nil {
		c.resumes = make(map[string]*channellayer.Recovery, 1)
	}
	filter := rec
	c.resumes[group] = &filter
	return rec, nil
}

// Do runs fn in the consumer's one-at-a-time order, from any goroutine (a
// timer, an HTTP handler, a job): fn never runs concurrently with the
// consumer's methods and handlers, so it may touch the consumer's state
// and call every method of c. Do waits for fn and returns its error; an
// error or panic closes the connection with 1011, as in a handler. Do
// returns ErrClosed without running fn once the connection is closing.
// Never call Do from the consumer's own methods or handlers: they already
// hold the order, and Do would wait for itself.
func (c *Conn) Do(fn func(ctx context.Context, c *Conn) error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	var ran bool
	c.call("do", func(ctx context.Context) error {
		if ctx.Err() != nil {
			return nil
		}
		ran = true
		return fn(ctx, c)
	})
	if !ran {
		return ErrClosed
	}
	return nil
}

// How a close proceeds.
type closeMode int

const (
	closeFlush closeMode = iota // write what is queued, then the close frame
	closeNow                    // drop what is queued, then the close frame
	closePeer                   // the peer closed or vanished: nothing to write
)

// closeWith starts closing once; later calls do nothing.
func (c *Conn) closeWith(code StatusCode, reason string, mode closeMode) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason, c.closeMode = code, reason, mode
		if mode != closeFlush {
			c.out.Drop()
		}
		c.cancel()
		if f := c.srv.opts.OnClosing; f != nil {
			f(code)
		}
		if c.started.Load() {
			c.startCloser()
		}
	})
}

func (c *Conn) startCloser() {
	c.closerOnce.Do(func() { c.tasks.Go(c.closeTransport) })
}

// closeTransport ends the connection on the wire: after the queued frames
// for a flushing close, at once otherwise.
func (c *Conn) closeTransport() {
	switch c.closeMode {
	case closePeer:
	case closeFlush:
		if done, write := c.out.Close(); write {
			c.flush()
		} else {
			select {
			case <-done:
			case <-time.After(c.srv.opts.WriteTimeout):
			}
		}
		_ = c.t.Close(c.closeCode, c.closeReason)
	case closeNow:
		_ = c.t.Close(c.closeCode, c.closeReason)
	}
	_ = c.t.CloseNow()
	c.rd.Wake() // an idle watched connection has no reader to notice the close
}

func (c *Conn) runFlush() {
	defer c.tasks.Done()
	c.flush()
}

// start begins serving an accepted connection: layer events, queued
// frames, pings. Reading follows (readLoop or readReady), then end.
func (c *Conn) start() {
	c.started.Store(true)
	if c.ctx.Err() != nil { // closed between Connect and the handshake
		c.startCloser()
	}
	if err := c.disp.Start(); err != nil {
		c.closeWith(StatusInternalError, "internal error", closeNow)
	}
	if c.out.Start() {
		c.startWriter()
	}
	c.srv.pinger.Add(&c.ping, c.startPing)
}

// end finishes the connection once reading is over: it stops what runs for
// it, calls Disconnect and releases it.
func (c *Conn) end() {
	c.srv.pinger.Remove(&c.ping)
	c.disp.Stop()
	c.tasks.Stop()
	c.rd.Forget()
	c.srv.track(c, false)
	c.srv.finish(c)
	c.cancel()
	c.srv.running.Done()
}

// readLoop reads on one goroutine until the transport is closed.
func (c *Conn) readLoop() {
	for c.received(c.t.Read(context.Background())) {
	}
}

// readReady reads what the socket has, then hands the socket to the poller
// and returns; the poller runs it again when more bytes arrive (see
// package poll). It ends the connection when the transport is closed.
func (c *Conn) readReady() {
	ws := c.t.(*wsconn.Conn)
	var linger time.Duration // after a message, wait a little for the next
	for {
		typ, data, err := ws.ReadIdle(context.Background(), linger)
		if errors.Is(err, wsconn.ErrIdle) {
			if c.rd.Arm() {
				return
			}
			ws.StopIdleReads() // the poller could not take it: keep reading here
			continue
		}
		if !c.received(typ, data, err) {
			c.end()
			return
		}
		linger = readLinger
	}
}

// readLinger is how long a reader waits for the next message after one,
// before it hands the socket back to the poller: chatty connections keep
// their reader, only quiet ones give it up.
var readLinger = 2 * time.Second

func (c *Conn) readWoken() {
	tasks.GrowStack()
	c.readReady()
}

// received handles the result of one read. It returns false once reading is
// over: the transport is closed.
func (c *Conn) received(typ websocket.MessageType, data []byte, err error) bool {
	if err != nil {
		code := websocket.CloseStatus(err)
		switch {
		case errors.Is(err, websocket.ErrMessageTooBig):
			c.closeWith(StatusTooBig, "frame too big", closePeer) // the library sent the close frame
		case code != -1:
			c.closeWith(code, "", closePeer)
		default:
			c.closeWith(StatusAbnormal, "", closePeer)
		}
		return false
	}
	if c.ctx.Err() != nil {
		return true // closing: drain until the transport says it is closed
	}
	if int64(len(data)) > c.srv.opts.ReadLimit {
		c.closeWith(StatusTooBig, "frame too big", closeNow)
		return true // the transport closes; reading fails next
	}
	if typ != websocket.MessageText {
		c.closeWith(StatusUnsupported, "text frames only", closeNow)
		return true
	}
	c.call("receive", func(ctx context.Context) error { return c.consumer.Receive(ctx, c, data) })
	return true
}

// call runs fn under the consumer lock, turning an error or a panic into a
// 1011 close.
func (c *Conn) call(what string, fn func(ctx context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.recoverPanic(what)
	if err := fn(c.ctx); err != nil {
		c.failed(what, err)
	}
}

// handle dispatches one layer event to the handler of its type, like call
// but without a closure per event.
func (c *Conn) handle(m channellayer.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.recoverPanic("event")
	h := c.lastH
	if m.Type != c.lastType || h == nil {
		h = c.handler(m.Type)
		c.lastType, c.lastH = m.Type, h
	}
	if m.ID != "" && c.resumes != nil {
		if r := c.resumes[m.Group]; r != nil && !r.Fresh(m) {
			return // a repeat of what GroupAddSince returned
		}
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
		c.closeWith(StatusInternalError, "internal error", closeNow)
	}
}

// failed closes the connection after the consumer returned an error.
func (c *Conn) failed(what string, err error) {
	if c.ctx.Err() != nil {
		return // closing anyway
	}
	c.Logger().Error("consumer failed; closing connection", "in", what, "err", err)
	c.closeWith(StatusInternalError, "internal error", closeNow)
}

// layerFailed closes the connection after its channel failed.
func (c *Conn) layerFailed(err error) {
	switch {
	case c.ctx.Err() != nil:
	case errors.Is(err, channellayer.ErrOverflow):
		c.closeWith(StatusTryAgainLater, "slow consumer", closeNow)
	default:
		c.Logger().Error("receiving from the layer failed; closing connection", "err", err)
		c.closeWith(StatusInternalError, "internal error", closeNow)
	}
}

// events is Conn as the host of its dispatcher (see package dispatch),
// with methods that stay out of Conn's own.
type events Conn

func (h *events) Handle(m channellayer.Message) { (*Conn)(h).handle(m) }
func (h *events) Failed(err error)              { (*Conn)(h).layerFailed(err) }
func (h *events) Begin()                        { h.out.Hold() }

func (h *events) End() {
	if h.out.Release() {
		(*Conn)(h).flush()
	}
}

func (c *Conn) startWriter() {
	if !c.tasks.Add() {
		c.out.WriterFailed()
		return
	}
	go c.goFlush()
}

// flush writes what is queued, in batches, and stops when the queue is
// empty; the next Send starts it again.
func (c *Conn) flush() {
	ws, _ := c.t.(*wsconn.Conn)
	own := ws != nil && ws.OwnWrites()
	for {
		frames := c.out.Take()
		if frames == nil {
			return
		}
		var err error
		if own {
			err = ws.WriteFrames(frames)
		} else {
			err = c.writeFrames(frames)
		}
		if err != nil {
			c.out.WriterFailed()
			c.closeWith(StatusAbnormal, "", closePeer)
			return
		}
		c.out.Written(frames)
	}
}

// writeFrames writes through the Transport interface, each batch bounded
// by WriteTimeout.
func (c *Conn) writeFrames(frames [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.WriteTimeout)
	defer cancel()
	if batch, ok := c.t.(BatchWriter); ok {
		return batch.WriteBatch(ctx, frames)
	}
	for _, f := range frames {
		if err := c.t.Write(ctx, f); err != nil {
			return err
		}
	}
	return nil
}
