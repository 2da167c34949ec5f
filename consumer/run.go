package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/consumer/internal/wire"
	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
)

// The connection's runtime: how its pieces are made, started, fed and
// stopped. Each piece owns its state (see its package under internal/):
//
//	tasks     the goroutines a connection starts while it has work
//	wire      the outgoing queue, the writer, the close sequence
//	outq      the queue itself: bounded in bytes, one writer at a time
//	dispatch  layer events to the consumer, bursts paced
//	ping      pings from one timer per server
//	poll      the socket of an idle connection, watched with epoll
//	wsconn    the websocket: our own frames, reads that stop when idle
//	sse       the fallback transport
//
// Serve makes the connection (newConn), runs Connect (connect), and once
// the transport is accepted, serve starts it and reads; the reader calls
// end when the transport is closed.

// newConn makes the connection of cons on the layer channel name, with
// its runtime ready to start.
func newConn(s *Server, scope Scope, cons Consumer, name string, ctx context.Context, cancel context.CancelFunc) *Conn {
	c := &Conn{srv: s, scope: scope, consumer: cons, channel: name, ctx: ctx, cancel: cancel}
	c.goRead = c.readWoken
	c.wire.Init(s.opts.QueueBytes, s.opts.WriteTimeout, &c.tasks, (*hooks)(c))
	c.disp.Init(s.disp, name, &c.tasks, (*hooks)(c))
	return c
}

// connect runs the consumer's Connect and returns its refusal, if any.
func (c *Conn) connect() error {
	// Connect runs on a goroutine of its own: its deep calls would
	// otherwise grow the stack of this goroutine, which may live on as the
	// connection's reader.
	var err error
	connected := make(chan struct{})
	go func() {
		defer close(connected)
		c.call("connect", func(ctx context.Context) error {
			err = c.consumer.Connect(ctx, c)
			return nil
		})
	}()
	<-connected
	if err == nil && c.ctx.Err() != nil {
		err = errors.New("consumer: Connect panicked or closed the connection")
	}
	return err
}

// serve runs the connection over its accepted transport (c.t): it starts
// it and reads. Where the poller watches the socket it returns as soon as
// nothing is left to read; the connection lives on until its reader calls
// end.
func (c *Conn) serve() {
	ws, _ := c.t.(*wsconn.Conn)
	watched := ws != nil && c.srv.poll.Watch(&c.rd, ws.RawConn(), c.goRead)
	c.start()
	if watched {
		c.readReady() // what came with the handshake; then the poller takes over
		return
	}
	c.readLoop()
	c.end()
}

// start begins serving an accepted connection: queued frames, layer
// events, pings.
func (c *Conn) start() {
	c.wire.Attach(c.t)
	if err := c.disp.Start(); err != nil {
		c.wire.Close(StatusInternalError, "internal error", wire.Now)
	}
	c.srv.pinger.Add(&c.ping, c.pingTick)
}

// end finishes the connection once reading is over: it stops what runs for
// it, calls Disconnect and releases it.
func (c *Conn) end() {
	c.srv.pinger.Remove(&c.ping)
	c.disp.Stop()
	c.tasks.Stop()
	c.rd.Forget()
	c.srv.track(c, false)
	c.srv.finish(c, true)
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

// readWoken is a reader the poller started.
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
			c.wire.Close(StatusTooBig, "frame too big", wire.Peer) // the library sent the close frame
		case code != -1:
			c.wire.Close(code, "", wire.Peer)
		default:
			c.wire.Close(StatusAbnormal, "", wire.Peer)
		}
		return false
	}
	if c.ctx.Err() != nil {
		return true // closing: drain until the transport says it is closed
	}
	if int64(len(data)) > c.srv.opts.ReadLimit {
		c.wire.Close(StatusTooBig, "frame too big", wire.Now)
		return true // the transport closes; reading fails next
	}
	if typ != websocket.MessageText {
		c.wire.Close(StatusUnsupported, "text frames only", wire.Now)
		return true
	}
	c.call("receive", func(ctx context.Context) error { return c.consumer.Receive(ctx, c, data) })
	return true
}

// quickPinger is a transport that sends a ping without waiting for
// anything (wsconn.Conn): the pinger checks its pong PingTimeout later, and
// the ping costs no goroutine and no timer.
type quickPinger interface {
	SendPing() (sent bool, err error)
	Unanswered() time.Duration
}

// pingTick is the connection's part in the server's pinger: it starts a
// ping (check false), or checks one it sent without waiting (check true):
// the peer is dead if a ping has waited PingTimeout for its pong. (Checks
// come PingTimeout after the ping, or with the next ping if that is
// sooner.)
func (c *Conn) pingTick(check bool) bool {
	qp, quick := c.t.(quickPinger)
	if check {
		if qp.Unanswered() < c.srv.opts.PingTimeout {
			return true
		}
		if c.ctx.Err() == nil {
			c.Logger().Info("peer did not answer a ping; closing", "timeout", c.srv.opts.PingTimeout)
		}
		c.wire.Close(StatusAbnormal, "", wire.Peer)
		return false
	}
	if quick {
		sent, err := qp.SendPing()
		if sent {
			c.ping.Await()
			return true
		}
		if err != nil {
			return false // the socket is broken: its reader ends the connection
		}
	}
	// A write is under way (or the transport cannot): a ping that waits,
	// on a tracked goroutine.
	return c.tasks.Go(c.pingPeer)
}

// pingPeer checks the peer is alive; one that does not answer in
// PingTimeout is dropped (1006).
func (c *Conn) pingPeer() {
	defer c.ping.Done()
	// Not derived from c.ctx: a closing transport ends the ping anyway,
	// and a child would leave c.ctx holding a map of children.
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.PingTimeout)
	err := c.t.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.Logger().Info("peer did not answer a ping; closing", "err", err)
		}
		c.wire.Close(StatusAbnormal, "", wire.Peer)
	}
}

// hooks is Conn as the host of its dispatcher and its wire (see packages
// dispatch and wire), with methods that stay out of Conn's own.
type hooks Conn

func (h *hooks) Context() context.Context                { return h.ctx }
func (h *hooks) Handle(msgs []channellayer.Message) bool { return (*Conn)(h).handleAll(msgs) }
func (h *hooks) Failed(err error)                        { (*Conn)(h).layerFailed(err) }
func (h *hooks) Begin()                                  { h.wire.Hold() }
func (h *hooks) End()                                    { h.wire.Release() }

func (h *hooks) Closing(code StatusCode) {
	h.cancel()
	if f := h.srv.opts.OnClosing; f != nil {
		f(code)
	}
}

// Closed wakes an idle watched connection: it has no reader to notice the
// close.
func (h *hooks) Closed() { h.rd.Wake() }
