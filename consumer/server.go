package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/dispatch"
	"github.com/chatterpro/chatterpro/consumer/internal/ping"
	"github.com/chatterpro/chatterpro/consumer/internal/poll"
	"github.com/chatterpro/chatterpro/consumer/internal/sse"
	"github.com/chatterpro/chatterpro/consumer/internal/wire"
	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
	"github.com/chatterpro/chatterpro/presence"
)

// Server runs consumers: it owns their connections' read and write loops,
// tracks every open connection, and closes them all on Shutdown.
type Server struct {
	opts  Options
	layer channellayer.Layer
	log   *slog.Logger

	base   context.Context
	cancel context.CancelFunc
	poll   *poll.Poller // nil where sockets are not watched
	pinger *ping.Pinger
	disp   *dispatch.Config // what every connection's dispatcher shares
	// connecting holds a token for each connection in Connect; nil: no
	// limit (Options.MaxConnecting).
	connecting chan struct{}
	waiting    atomic.Int64 // connections waiting for a turn in Connect
	sse        *sse.Hub     // event streams of the fallback transport (sse.go)

	mu       sync.Mutex
	conns    map[*Conn]struct{}
	shutdown bool
	running  sync.WaitGroup

	warned sync.Map // event types without handler already logged

	trackerMu     sync.Mutex
	presence      *presence.Tracker // made by the first Conn.Track
	trackerClosed bool
}

// unhandled counts and reports an event that no handler took.
func (s *Server) unhandled(c *Conn, typ string) {
	if f := s.opts.OnUnhandled; f != nil {
		f(typ)
	}
	if _, seen := s.warned.LoadOrStore(typ, true); !seen {
		c.Logger().Warn("layer event with no handler dropped; register one with Conn.On (logged once per type)", "type", typ)
	}
}

// NewServer returns a server for consumers on opts.Layer.
func NewServer(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:   opts,
		layer:  opts.Layer,
		log:    opts.Logger,
		base:   base,
		cancel: cancel,
		poll:   poll.New(opts.Logger),
		conns:  make(map[*Conn]struct{}),
		pinger: ping.New(opts.PingInterval, opts.PingTimeout),
		disp:   dispatch.NewConfig(opts.Layer, opts.Coalesce),
		sse:    sse.NewHub(opts.Layer, opts.Logger),
	}
	if opts.MaxConnecting > 0 {
		s.connecting = make(chan struct{}, opts.MaxConnecting)
	}
	return s, nil
}

// ErrShutdown refuses connections to a server that is shutting down.
var ErrShutdown = errors.New("consumer: server shutting down")

// ErrBusy refuses a connection that waited too long for its turn in
// Connect (Options.MaxConnecting): the client should try again shortly.
var ErrBusy = errors.New("consumer: too many connections starting at once; try again in a moment")

// connectWait is how long a connection waits for a turn in Connect:
// long enough that a storm waits in line more than it comes back (each
// attempt costs both ends a TCP and HTTP exchange), short enough that an
// admitted browser client still opens within its 10 s open timeout.
var connectWait = 6 * time.Second

// turn takes a turn in Connect, waiting up to connectWait for one; false
// if none came, or ctx (the request's) ended first. done gives it back.
func (s *Server) turn(ctx context.Context) (ok bool, done func()) {
	if s.connecting == nil {
		return true, func() {}
	}
	done = func() { <-s.connecting }
	select {
	case s.connecting <- struct{}{}:
		return true, done
	default:
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	t := time.NewTimer(connectWait)
	defer t.Stop()
	select {
	case s.connecting <- struct{}{}:
		return true, done
	case <-ctx.Done():
		return false, nil
	case <-t.C:
		if s.opts.OnBusy != nil {
			s.opts.OnBusy()
		}
		return false, nil
	}
}

// Serve runs one connection: it calls cons.Connect, and if that accepts,
// accept to complete the handshake, then serves the connection until it
// closes. It returns the Connect error (see RefuseError) if the consumer
// refused, ErrShutdown if the server is shutting down, ErrBusy if no turn
// in Connect came in time, or accept's error.
//
// ctx is the request's. If it ends before accept returns (the client gave
// up while it waited for a turn, or while Connect ran), the connection is
// given up: Connect's context ends, what it joined is left at once (no
// presence grace period: nobody was ever connected), and Serve returns
// ctx's error. A storm of reconnecting clients with short timeouts then
// spends no turn on the ones that have already gone. Once accepted, the
// connection no longer depends on ctx.
//
// A transport with a socket the server can watch (a websocket over TCP on
// Linux) is served without a goroutine while it is idle: Serve returns as
// soon as nothing is left to read, and the connection lives on until it
// closes (Shutdown waits for it).
func (s *Server) Serve(ctx context.Context, scope Scope, cons Consumer, accept func() (Transport, error)) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrShutdown
	}
	s.running.Add(1)
	s.mu.Unlock()

	ok, done := s.turn(ctx)
	if !ok {
		s.running.Done()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consumer: the client went away while it waited for a turn in Connect: %w", err)
		}
		return ErrBusy
	}
	cctx, cancel := context.WithCancel(s.base)
	gone := context.AfterFunc(ctx, cancel) // the client went away before it was served
	servingOn := false                     // from then on Conn.end releases the connection
	defer func() {
		if !servingOn {
			gone()
			cancel()
			s.running.Done()
		}
	}()
	name, err := s.layer.NewChannel(cctx)
	if err != nil {
		done()
		return fmt.Errorf("consumer: creating the connection's channel: %w", err)
	}
	c := newConn(s, scope, cons, name, cctx, cancel)
	connectErr := c.connect()
	done()
	if connectErr != nil {
		s.release(c)
		return connectErr
	}
	t, err := accept()
	if err == nil && !gone() { // the client went away during Connect or the handshake
		_ = t.CloseNow()
		err = fmt.Errorf("consumer: the client went away before it was served: %w", ctx.Err())
	}
	if err != nil {
		c.wire.Close(StatusAbnormal, "", wire.Peer)
		s.finish(c, false)
		return err
	}
	c.t = t // before track: Shutdown may cut it
	s.track(c, true)
	servingOn = true
	c.serve()
	return nil
}

func (s *Server) track(c *Conn, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !open {
		delete(s.conns, c)
		return
	}
	s.conns[c] = struct{}{}
	if s.shutdown { // Shutdown ran between Connect and here
		c.wire.Close(StatusServiceRestart, "server restarting", wire.Flush)
	}
}

// finish calls Disconnect, then releases the connection's channel and
// groups. A connection that was never served (its client went away before
// or during the handshake) leaves presence at once, without the grace
// period.
func (s *Server) finish(c *Conn, served bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DisconnectTimeout)
	defer cancel()
	c.mu.Lock()
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.Logger().Error("consumer panicked in Disconnect", "panic", p)
			}
		}()
		c.consumer.Disconnect(ctx, c, c.wire.Code())
	}()
	c.leavePresence(ctx, served)
	c.mu.Unlock()
	s.releaseCtx(ctx, c)
}

func (s *Server) release(c *Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DisconnectTimeout)
	defer cancel()
	c.cancel()
	c.mu.Lock()
	c.leavePresence(ctx, false)
	c.mu.Unlock()
	s.releaseCtx(ctx, c)
}

func (s *Server) releaseCtx(ctx context.Context, c *Conn) {
	if err := s.layer.DiscardChannel(ctx, c.channel); err != nil {
		c.Logger().Warn("discarding the connection's channel failed", "err", err)
	}
}

// ServeWebSocket serves one websocket request with cons. The origin is not
// checked here: routing does that before (see package routing).
func (s *Server) ServeWebSocket(w http.ResponseWriter, r *http.Request, scope Scope, cons Consumer) {
	err := s.Serve(r.Context(), scope, cons, func() (Transport, error) {
		// The origin was checked by routing.
		ws, err := wsconn.Accept(w, r, wsconn.Options{ReadLimit: s.opts.ReadLimit, WriteTimeout: s.opts.WriteTimeout})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errAcceptFailed, err)
		}
		return ws, nil
	})
	var refuse *RefuseError
	switch {
	case err == nil:
	case errors.As(err, &refuse):
		http.Error(w, refuse.Reason, refuse.Status)
	case errors.Is(err, ErrShutdown):
		http.Error(w, "server restarting, try another", http.StatusServiceUnavailable)
	case errors.Is(err, ErrBusy):
		busy(w)
	case r.Context().Err() != nil: // nobody to answer
		s.log.Debug("client went away before its connection was served", "path", scope.Path, "err", err)
	default:
		// accept failed (it answered the client itself) or the layer did.
		if !errors.Is(err, errAcceptFailed) {
			s.log.Error("websocket connection failed", "path", scope.Path, "err", err)
		}
	}
}

var errAcceptFailed = errors.New("consumer: websocket handshake failed")

// Len returns the number of open connections.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown refuses new connections, closes every open one with 1012
// (service restart) so its client reconnects elsewhere, and waits for them
// to finish, or for ctx; then it cuts whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.sse.Close()
	s.mu.Lock()
	s.shutdown = true
	for c := range s.conns {
		c.wire.Close(StatusServiceRestart, "server restarting", wire.Flush)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.running.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return s.closeTracker(ctx)
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			if c.t != nil {
				_ = c.t.CloseNow()
			}
		}
		s.mu.Unlock()
		s.cancel()
		<-done
		_ = s.closeTracker(context.Background())
		return ctx.Err()
	}
}

// busy answers a request refused with ErrBusy.
func busy(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "server busy: too many connections starting at once, try again in a moment", http.StatusServiceUnavailable)
}
