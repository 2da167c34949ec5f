package consumer

import (
	"context"

	"github.com/coder/websocket"
)

// Transport is the socket under a connection: a websocket in production,
// an in-memory pipe in tests (see package consumertest). The framework owns
// it: one goroutine reads, one writes, and Ping and Close may be called
// concurrently with both.
type Transport interface {
	// Read returns the next message. After the peer closed, the error
	// carries its close code (websocket.CloseStatus).
	Read(ctx context.Context) (websocket.MessageType, []byte, error)
	// Write sends one text message.
	Write(ctx context.Context, text []byte) error
	// Ping checks the peer is alive, waiting for its pong.
	Ping(ctx context.Context) error
	// Close sends a close frame with code and reason and closes.
	Close(code StatusCode, reason string) error
	// CloseNow closes at once, without a close handshake.
	CloseNow() error
}

// wsTransport adapts a coder/websocket connection.
type wsTransport struct{ c *websocket.Conn }

func (t wsTransport) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	return t.c.Read(ctx)
}

func (t wsTransport) Write(ctx context.Context, text []byte) error {
	return t.c.Write(ctx, websocket.MessageText, text)
}

func (t wsTransport) Ping(ctx context.Context) error { return t.c.Ping(ctx) }

func (t wsTransport) Close(code StatusCode, reason string) error { return t.c.Close(code, reason) }

func (t wsTransport) CloseNow() error { return t.c.CloseNow() }
