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
	if f := t.flusher(); f != nil {
		return f.writeBatch(texts)
	}
	for _, p := range texts {
		if err := t.c.Write(ctx, websocket.MessageText, p); err != nil {
			return err
		}
	}
	return nil
}

// writeBatch is the connection's own write path (see flusher): every frame
// of the batch goes into the cork, then one write to the network, bounded
// by the cork's deadline. The frames are handed to the websocket library
// without a context to watch: writing into the cork never blocks, so there
// is nothing for a context to cut short, and the library then sets up no
// timer per frame. It waits only for its own lock, which a control frame
// stuck on the network holds at most until that frame's own timeout closes
// the connection.
func (t wsTransport) writeBatch(texts [][]byte) error {
	t.cork.cork()
	for _, p := range texts {
		if err := t.c.Write(context.Background(), websocket.MessageText, p); err != nil {
			_ = t.cork.uncork()
			return err
		}
	}
	return t.cork.uncork()
}

// flusher is implemented by transports that bound their writes themselves,
// so that a batch needs no context (and no timer) of its own.
type flusher interface {
	writeBatch(texts [][]byte) error
}

// flusher returns the transport's own write path, or nil.
func (t wsTransport) flusher() flusher {
	if t.cork == nil || t.cork.timeout <= 0 {
		return nil
	}
	return t
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
//
// Every write to the network is bounded by a write deadline that the
// connection keeps armed: it is moved forward only when less than 7/8 of
// timeout is left, so a busy connection touches its deadline about once
// every timeout/8 rather than twice per write, and a write is given between
// 7/8 of timeout and all of it.
type corkConn struct {
	net.Conn
	timeout time.Duration // 0: no deadline (set before the first write)

	mu       sync.Mutex
	corked   bool
	buf      *[]byte
	deadline time.Time // the write deadline armed on Conn
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
	c.arm()
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// arm makes sure the write deadline leaves at least 7/8 of timeout. Called
// with c.mu held.
func (c *corkConn) arm() {
	if c.timeout <= 0 {
		return
	}
	now := time.Now()
	if c.deadline.Sub(now) >= c.timeout-c.timeout/8 {
		return
	}
	c.deadline = now.Add(c.timeout)
	_ = c.Conn.SetWriteDeadline(c.deadline)
}

// uncork sends what was collected, in one write.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	buf := c.buf
	c.corked, c.buf = false, nil
	if len(*buf) > 0 {
		c.arm()
	}
	c.mu.Unlock()
	var err error
	if len(*buf) > 0 {
		_, err = c.Conn.Write(*buf)
	}
	if cap(*buf) <= 256<<10 {
		*buf = (*buf)[:0]
		batchBufs.Put(buf)
	}
	return err
}
