package consumertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
)

// Client is a websocket client of a consumer reached through an
// http.Handler (a routing.Router, with its middleware), over in-memory
// connections instead of a network: the request goes through everything a
// real one does (origin check, Identify, path parameters, the consumer's
// Connect), and the consumer runs on a real websocket transport.
type Client struct {
	ws *websocket.Conn
}

// DialOptions configures Dial.
type DialOptions struct {
	// Header is sent with the handshake: Cookie, Origin...
	Header http.Header
	// Host is the request's Host. Defaults to "example.test".
	Host string
}

// Handler serves h to Dial, over in-memory connections, until the test ends.
type Handler struct {
	t    testing.TB
	srv  *http.Server
	ln   *pipeListener
	done chan struct{}
}

// Serve starts serving h for Dial. Hijacked connections (websockets) are
// not closed by Serve's cleanup: the consumer.Server behind h owns them and
// closes them on Shutdown.
func Serve(t testing.TB, h http.Handler) *Handler {
	t.Helper()
	ln := &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	hd := &Handler{t: t, srv: srv, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(hd.done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-hd.done
	})
	return hd
}

// Dial opens a websocket to path (with its query) on the handler. When the
// handler refuses the handshake, it returns the HTTP response (status and
// body read into the error) and an error; otherwise the response of the
// accepted handshake.
func (h *Handler) Dial(ctx context.Context, path string, opts DialOptions) (*Client, *http.Response, error) {
	host := opts.Host
	if host == "" {
		host = "example.test"
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return h.ln.dial(ctx) },
	}}
	ws, resp, err := websocket.Dial(ctx, "ws://"+host+path, &websocket.DialOptions{
		HTTPClient: client,
		HTTPHeader: opts.Header,
	})
	if err != nil {
		return nil, resp, fmt.Errorf("consumertest: dial %s: %w", path, err)
	}
	ws.SetReadLimit(-1)
	c := &Client{ws: ws}
	h.t.Cleanup(func() { _ = ws.CloseNow() })
	return c, resp, nil
}

// SendText sends a text frame.
func (c *Client) SendText(ctx context.Context, text string) error {
	return c.ws.Write(ctx, websocket.MessageText, []byte(text))
}

// SendJSON encodes v and sends it as a text frame.
func (c *Client) SendJSON(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// Receive returns the next frame. Once the server closed the connection it
// returns an error carrying the close code (websocket.CloseStatus).
func (c *Client) Receive(ctx context.Context) ([]byte, error) {
	_, b, err := c.ws.Read(ctx)
	return b, err
}

// ReceiveJSON decodes the next frame into v.
func (c *Client) ReceiveJSON(ctx context.Context, v any) error {
	b, err := c.Receive(ctx)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("consumertest: frame %s is not JSON: %w", b, err)
	}
	return nil
}

// Close closes the connection with code and reason.
func (c *Client) Close(code consumer.StatusCode, reason string) error {
	return c.ws.Close(code, reason)
}

// pipeListener hands the server one end of an in-memory connection per
// dial.
type pipeListener struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, errors.New("consumertest: handler closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "consumertest" }
