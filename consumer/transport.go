package consumer

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"sync"
	"time"

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
type wsTransport struct {
	c    *websocket.Conn
	cork *corkConn // nil if the connection could not be wrapped
}

func (t wsTransport) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	return t.c.Read(ctx)
}

func (t wsTransport) Write(ctx context.Context, text []byte) error {
	return t.c.Write(ctx, websocket.MessageText, text)
}

func (t wsTransport) Ping(ctx context.Context) error { return t.c.Ping(ctx) }

func (t wsTransport) Close(code StatusCode, reason string) error { return t.c.Close(code, reason) }

func (t wsTransport) CloseNow() error { return t.c.CloseNow() }

// BatchWriter is implemented by transports that can send several messages
// in one write to the network (one syscall for a whole queue).
type BatchWriter interface {
	WriteBatch(ctx context.Context, texts [][]byte) error
}

func (t wsTransport) WriteBatch(ctx context.Context, texts [][]byte) error {
	if t.cork == nil || len(texts) == 1 {
		for _, p := range texts {
			if err := t.c.Write(ctx, websocket.MessageText, p); err != nil {
				return err
			}
		}
		return nil
	}
	t.cork.cork()
	for _, p := range texts {
		if err := t.c.Write(ctx, websocket.MessageText, p); err != nil {
			_ = t.cork.uncork(ctx)
			return err
		}
	}
	return t.cork.uncork(ctx)
}

// corkWriter hands coder/websocket a connection whose writes can be held
// back ("corked") while a batch of frames is written, then sent in one go.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
}

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc}
	// The hijacked writer is empty (net/http flushed the 101 response);
	// replace it with one that writes through the cork.
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4096)), nil
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// corkConn is a net.Conn whose writes are collected while corked.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    *[]byte
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.buf = batchBufs.Get().(*[]byte)
	c.mu.Unlock()
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		*c.buf = append(*c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// uncork sends what was collected, in one write.
func (c *corkConn) uncork(ctx context.Context) error {
	c.mu.Lock()
	buf := c.buf
	c.corked, c.buf = false, nil
	c.mu.Unlock()
	var err error
	if len(*buf) > 0 {
		if d, ok := ctx.Deadline(); ok {
			_ = c.Conn.SetWriteDeadline(d)
		}
		_, err = c.Conn.Write(*buf)
		_ = c.Conn.SetWriteDeadline(time.Time{})
	}
	if cap(*buf) <= 256<<10 {
		*buf = (*buf)[:0]
		batchBufs.Put(buf)
	}
	return err
}
