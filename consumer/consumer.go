package consumer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Consumer serves one websocket connection. The framework creates one
// instance per connection and calls its methods one at a time, never
// concurrently: Connect first, then Receive for each text frame and the
// handlers registered with Conn.On for each layer event, then Disconnect.
type Consumer interface {
	// Connect runs before the websocket handshake completes. Returning nil
	// accepts the connection; an error refuses it with an HTTP status (see
	// Refuse; other errors answer 500). Frames sent here are delivered
	// right after the handshake, before any other. Its ctx is the
	// connection's: it lives until the connection starts closing, so it
	// may be kept by what the consumer starts for the connection.
	Connect(ctx context.Context, c *Conn) error
	// Receive handles one text frame from the client. An error closes the
	// connection with 1011 and is logged. Its ctx is the connection's, as
	// for Connect and for every event handler.
	Receive(ctx context.Context, c *Conn, text []byte) error
	// Disconnect runs once the connection is closed, with the close code.
	// The connection's groups are discarded after it returns. Its ctx is
	// a fresh one, bounded by Options.DisconnectTimeout (the connection's
	// own has ended).
	Disconnect(ctx context.Context, c *Conn, code StatusCode)
}

// EventHandler handles a layer event of one type (see Conn.On).
type EventHandler func(ctx context.Context, c *Conn, m channellayer.Message) error

// Funcs adapts plain functions to a Consumer; nil fields do nothing (a nil
// OnConnect accepts every connection).
type Funcs struct {
	OnConnect    func(ctx context.Context, c *Conn) error
	OnReceive    func(ctx context.Context, c *Conn, text []byte) error
	OnDisconnect func(ctx context.Context, c *Conn, code StatusCode)
}

var _ Consumer = Funcs{}

// Connect calls f.OnConnect.
func (f Funcs) Connect(ctx context.Context, c *Conn) error {
	if f.OnConnect == nil {
		return nil
	}
	return f.OnConnect(ctx, c)
}

// Receive calls f.OnReceive.
func (f Funcs) Receive(ctx context.Context, c *Conn, text []byte) error {
	if f.OnReceive == nil {
		return nil
	}
	return f.OnReceive(ctx, c, text)
}

// Disconnect calls f.OnDisconnect.
func (f Funcs) Disconnect(ctx context.Context, c *Conn, code StatusCode) {
	if f.OnDisconnect != nil {
		f.OnDisconnect(ctx, c, code)
	}
}

// StatusCode is a websocket close code.
type StatusCode = websocket.StatusCode

// Close codes the framework uses.
const (
	StatusNormal         StatusCode = websocket.StatusNormalClosure   // 1000
	StatusGoingAway      StatusCode = websocket.StatusGoingAway       // 1001
	StatusUnsupported    StatusCode = websocket.StatusUnsupportedData // 1003
	StatusAbnormal       StatusCode = websocket.StatusAbnormalClosure // 1006, never sent: the peer vanished
	StatusPolicy         StatusCode = websocket.StatusPolicyViolation // 1008
	StatusTooBig         StatusCode = websocket.StatusMessageTooBig   // 1009
	StatusInternalError  StatusCode = websocket.StatusInternalError   // 1011
	StatusServiceRestart StatusCode = websocket.StatusServiceRestart  // 1012
	StatusTryAgainLater  StatusCode = websocket.StatusTryAgainLater   // 1013: slow consumer
)

var (
	// ErrClosed is returned by sends on a closed connection.
	ErrClosed = errors.New("consumer: connection closed")
	// ErrSlow is returned by a send that found the outgoing queue full; the
	// connection is being closed with 1013.
	ErrSlow = errors.New("consumer: outgoing queue full, closing slow connection")
)

// RefuseError refuses a connection in Connect with an HTTP status.
type RefuseError struct {
	Status int    // HTTP status, e.g. 403
	Reason string // sent as the response body
}

func (e *RefuseError) Error() string {
	return fmt.Sprintf("consumer: connection refused: %d %s", e.Status, e.Reason)
}

// Refuse returns an error that makes Connect refuse the connection with the
// given HTTP status (403 Forbidden if status is 0).
func Refuse(status int, reason string) error {
	if status == 0 {
		status = http.StatusForbidden
	}
	return &RefuseError{Status: status, Reason: reason}
}
