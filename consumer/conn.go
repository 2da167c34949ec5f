package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/dispatch"
	"github.com/chatterpro/chatterpro/consumer/internal/outq"
	"github.com/chatterpro/chatterpro/consumer/internal/ping"
	"github.com/chatterpro/chatterpro/consumer/internal/poll"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/consumer/internal/wire"
)

// Conn is a consumer's handle on its connection: send frames, close, join
// groups, read the scope. Send, SendJSON and Close are safe to call from any
// goroutine and never block; the other methods are meant for the consumer's
// own methods and handlers, or a function run by Do.
type Conn struct {
	// Fixed before the connection starts.
	srv      *Server
	scope    Scope
	consumer Consumer
	channel  string
	t        Transport
	ctx      context.Context // the connection's; cancelled as it starts closing
	cancel   context.CancelFunc

	// The consumer's one-at-a-time order (order.go): mu is held by every
	// call into the consumer, and guards what those calls touch.
	mu       sync.Mutex
	handlers handlerTable // layer event types (On)
	resumes  []resume     // joins "since" an ID not yet caught up (GroupAddSince)
	frames   *frameState  // the JSON convention (json.go)
	tracked  []string     // groups of Track (presence.go)

	// The runtime (run.go): each piece owns its state, see its package.
	tasks  tasks.Group         // the goroutines besides the reader
	wire   wire.Wire           // outgoing frames, and the close sequence
	disp   dispatch.Dispatcher // layer events to the consumer
	ping   ping.Entry          // the connection's place in the server's pinger
	rd     poll.Handle         // the socket, while the poller watches it
	goRead func()              // readWoken, made once: a woken reader starts without allocating
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
func (c *Conn) On(typ string, h EventHandler) { c.handlers.set(typ, h) }

// Send queues a text frame. It never blocks: if the outgoing queue is full
// the connection is closed with 1013 and ErrSlow is returned. The bytes must
// not be modified afterwards; the same slice may be sent to many connections.
func (c *Conn) Send(text []byte) error {
	switch err := c.wire.Send(text); err {
	case nil:
		return nil
	case outq.ErrFull:
		return ErrSlow
	default:
		return ErrClosed
	}
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
	c.wire.Close(code, reason, wire.Flush)
}

// GroupAdd joins a group; the connection leaves it when it closes.
func (c *Conn) GroupAdd(ctx context.Context, group string) error {
	return c.srv.layer.GroupAdd(ctx, group, c.channel)
}

// GroupDiscard leaves a group.
func (c *Conn) GroupDiscard(ctx context.Context, group string) error {
	c.caughtUp(group)
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
	c.caughtUp(group)
	if rec.Filters() { // else nothing live can repeat what it returned
		filter := rec
		filter.Messages = nil // only the newest ID is needed: keep no history per connection
		c.resumes = append(c.resumes, resume{group: group, filter: filter})
	}
	return rec, nil
}

// resume filters a group's live events after GroupAddSince until they pass
// what its Recovery returned.
type resume struct {
	group  string
	filter channellayer.Recovery
}

// repeat reports whether m, an event of a group joined with GroupAddSince,
// repeats what the join returned; once the group's events are past it, the
// filter is dropped.
func (c *Conn) repeat(m channellayer.Message) bool {
	for i := range c.resumes {
		if c.resumes[i].group == m.Group {
			if !c.resumes[i].filter.Fresh(m) {
				return true
			}
			c.caughtUp(m.Group) // events of a group arrive in order: the rest is new
			return false
		}
	}
	return false
}

// caughtUp drops the group's filter, if any.
func (c *Conn) caughtUp(group string) {
	c.resumes = slices.DeleteFunc(c.resumes, func(r resume) bool { return r.group == group })
	if len(c.resumes) == 0 {
		c.resumes = nil
	}
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
	var err error
	c.call("do", func(ctx context.Context) error {
		if ctx.Err() != nil {
			return nil
		}
		ran = true
		err = fn(ctx, c)
		return err
	})
	if !ran {
		return ErrClosed
	}
	return err
}
