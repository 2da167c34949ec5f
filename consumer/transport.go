package consumer

import (
	"context"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer/internal/sse"
	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
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

// BatchWriter is implemented by transports that can send several messages
// in one write to the network (one syscall for a whole queue).
type BatchWriter interface {
	WriteBatch(ctx context.Context, texts [][]byte) error
}

var (
	_ Transport   = (*wsconn.Conn)(nil)
	_ BatchWriter = (*wsconn.Conn)(nil)
	_ Transport   = (*sse.Stream)(nil)
	_ BatchWriter = (*sse.Stream)(nil)
)
