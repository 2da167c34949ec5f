package consumertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
)

// Options configures a Communicator. The zero value works.
type Options struct {
	// Layer the consumer runs on. Defaults to a new memory layer, closed
	// with the test. Share one layer between communicators to test groups.
	Layer channellayer.Layer
	// Scope the consumer sees (path params, user, query...).
	Scope consumer.Scope
	// ServerOptions holds the framework's limits (ReadLimit, QueueBytes...);
	// its Layer is set from Layer.
	ServerOptions consumer.Options
	// Server, if set, runs the consumer instead of a new server made from
	// ServerOptions: to test Server.Shutdown, or an application's own server.
	Server *consumer.Server
	// Buffer is how many frames the simulated client buffers before the
	// server's writes block, as if it had stopped reading. Defaults to 4096.
	Buffer int
}

// Communicator drives one consumer without a network, like Channels'
// WebsocketCommunicator: connect, send and receive frames, disconnect. It
// runs the framework's real connection loops over an in-memory pipe.
type Communicator struct {
	t     testing.TB
	layer channellayer.Layer
	srv   *consumer.Server
	own   bool // srv was made here: shut it down with the test
	scope consumer.Scope
	newC  func() consumer.Consumer
	pipe  *pipe
	done  chan error // Serve's result
	once  sync.Once
}

// New returns a communicator for a consumer made by f. Everything it
// starts is stopped when the test ends.
func New(t testing.TB, f func() consumer.Consumer, opts Options) *Communicator {
	t.Helper()
	if opts.Layer == nil {
		mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
		if err != nil {
			t.Fatalf("consumertest: %v", err)
		}
		t.Cleanup(func() { _ = mem.Close(context.Background()) })
		opts.Layer = mem
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 4096
	}
	srv := opts.Server
	if srv == nil {
		so := opts.ServerOptions
		so.Layer = opts.Layer
		var err error
		if srv, err = consumer.NewServer(so); err != nil {
			t.Fatalf("consumertest: %v", err)
		}
	}
	if opts.Scope.Path == "" {
		opts.Scope.Path = "/"
	}
	c := &Communicator{t: t, layer: opts.Layer, srv: srv, own: opts.Server == nil, scope: opts.Scope, newC: f, pipe: newPipe(opts.Buffer), done: make(chan error, 1)}
	t.Cleanup(c.cleanup)
	return c
}

// Layer returns the layer the consumer runs on (Options.Layer, or the
// memory layer made for it), to send it events from the test.
func (c *Communicator) Layer() channellayer.Layer { return c.layer }

// Connect runs the consumer's Connect. It returns nil if the connection was
// accepted, or the consumer's refusal (a *consumer.RefuseError, see
// errors.As) if it was refused.
func (c *Communicator) Connect(ctx context.Context) error {
	accepted := make(chan struct{})
	go func() {
		c.done <- c.srv.Serve(ctx, c.scope, c.newC(), func() (consumer.Transport, error) {
			close(accepted)
			return c.pipe.server(), nil
		})
	}()
	select {
	case <-accepted:
		return nil
	case err := <-c.done:
		c.done <- err
		if err == nil {
			err = errors.New("consumertest: connection ended before it was accepted")
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("consumertest: waiting for Connect: %w", ctx.Err())
	}
}

// SendText sends a text frame to the consumer.
func (c *Communicator) SendText(ctx context.Context, text string) error {
	return c.pipe.clientSend(ctx, frame{typ: websocket.MessageText, data: []byte(text)})
}

// SendBinary sends a binary frame to the consumer.
func (c *Communicator) SendBinary(ctx context.Context, data []byte) error {
	return c.pipe.clientSend(ctx, frame{typ: websocket.MessageBinary, data: data})
}

// SendJSON encodes v and sends it as a text frame.
func (c *Communicator) SendJSON(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.SendText(ctx, string(b))
}

// Receive returns the next frame the consumer sent. Once the server closed
// the connection it returns a websocket.CloseError with the close code
// (see websocket.CloseStatus).
func (c *Communicator) Receive(ctx context.Context) ([]byte, error) {
	return c.pipe.clientReceive(ctx)
}

// ReceiveJSON decodes the next frame into v.
func (c *Communicator) ReceiveJSON(ctx context.Context, v any) error {
	b, err := c.Receive(ctx)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("consumertest: frame %s is not JSON: %w", b, err)
	}
	return nil
}

// ReceiveNothing reports whether no frame arrives within d. A frame that
// does arrive is consumed and returned.
func (c *Communicator) ReceiveNothing(d time.Duration) (bool, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	b, err := c.pipe.clientReceive(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return true, nil
	}
	return false, b
}

// Closed waits until the server closed the connection and returns its
// close code, skipping any frames still queued.
func (c *Communicator) Closed(ctx context.Context) (consumer.StatusCode, error) {
	for {
		_, err := c.pipe.clientReceive(ctx)
		if err == nil {
			continue
		}
		if code := websocket.CloseStatus(err); code != -1 {
			return code, nil
		}
		return 0, err
	}
}

// Disconnect closes the connection from the client side with code and
// waits until the consumer's Disconnect has run.
func (c *Communicator) Disconnect(ctx context.Context, code consumer.StatusCode) error {
	c.pipe.clientClose(code)
	return c.Wait(ctx)
}

// Stall makes the simulated client stop answering pings, as if it had died.
func (c *Communicator) Stall() { c.pipe.stall() }

// Wait waits until the connection has ended on the server side (the
// consumer's Disconnect has returned).
func (c *Communicator) Wait(ctx context.Context) error {
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	case <-ctx.Done():
		return fmt.Errorf("consumertest: waiting for the connection to end: %w", ctx.Err())
	}
}

func (c *Communicator) cleanup() {
	c.once.Do(func() {
		c.pipe.clientClose(consumer.StatusGoingAway)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c.own {
			_ = c.srv.Shutdown(ctx)
			return
		}
		_ = c.Wait(ctx)
	})
}
