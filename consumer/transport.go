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

func (t wsTransport) Close(code StatusCode, reason string) error {
	t.cork.stopIdleReads()
	return t.c.Close(code, reason)
}

func (t wsTransport) CloseNow() error {
	t.cork.stopIdleReads()
	return t.c.CloseNow()
}

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

// writeBatch is the connection's own write path (see flusher): the text
// frames are framed here and sent in one write, bounded by the connection's
// deadline, without a context or a lock round trip per frame in the library.
func (t wsTransport) writeBatch(texts [][]byte) error { return t.cork.writeFrames(texts) }

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

// corkWriter hands coder/websocket a connection (corkConn) through which
// the framework writes its text frames itself, and whose reads borrow a
// buffer only while bytes are pending (see corkConn.Read). conn exists
// before the handshake, for the ping and pong hooks; Hijack connects it.
type corkWriter struct {
	http.ResponseWriter
	conn *corkConn
}

// Size of the buffers coder/websocket reads and writes through. Neither
// holds data while the connection is idle: the reader is refilled from a
// pooled buffer (see corkConn.Read), and the library writes only control
// frames: a ping or a close frame of ours fits whole (one write), a pong
// with a long payload takes a few.
const (
	wsReadBufSize  = 16
	wsWriteBufSize = 32
)

func (w *corkWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := w.conn
	c.Conn = nc
	c.raw = rawConnOf(nc)
	// Keep what net/http read ahead (a frame the client sent right after
	// its handshake request), not net/http's 4 KiB buffers. The hijacked
	// writer is empty (net/http flushed the 101 response).
	if n := brw.Reader.Buffered(); n > 0 {
		head, _ := brw.Reader.Peek(n)
		c.pend(head)
	}
	c.br = bufio.NewReaderSize(c, wsReadBufSize)
	return c, bufio.NewReadWriter(c.br, bufio.NewWriterSize(c, wsWriteBufSize)), nil
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// corkConn is the hijacked connection under a websocket. The framework
// writes its text frames straight to it, a whole batch framed in one buffer
// and sent in one write (writeFrames); the library writes through it only
// what it writes itself: pongs, pings, the close frame.
//
// The two never interleave inside a frame. A batch is written while the
// library writes nothing, and the library's writes wait for it; the
// library's output is followed frame by frame (libFrame), so that a frame
// it writes in several pieces is not cut by a batch. Once the library has
// sent its close frame, no batch follows it.
//
// Every write to the network is bounded by a write deadline that the
// connection keeps armed: it is moved forward only when less than 7/8 of
// timeout is left, so a busy connection touches its deadline about once
// every timeout/8 rather than twice per write, and a write is given between
// 7/8 of timeout and all of it.
type corkConn struct {
	net.Conn
	timeout time.Duration // 0: no deadline (set before the first write)

	mu        sync.Mutex
	turn      sync.Cond // signalled when a write ends; L is mu (set on first wait)
	deadline  time.Time // the write deadline armed on Conn
	batch     bool      // a batch is being written
	libActive bool      // a write of the library is under way
	lib       libFrame  // where the library's output stands
	closeSent bool      // the library wrote its close frame
	err       error     // a write failed: the stream is broken

	idleReads // the read side, see readiness.go
}

// wait waits for the end of a write; called with c.mu held.
func (c *corkConn) wait() {
	if c.turn.L == nil {
		c.turn.L = &c.mu
	}
	c.turn.Wait()
}

// Write is the library's path to the network.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for (c.batch || c.libActive) && c.err == nil {
		c.wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.lib.feed(p) {
		c.closeSent = true
	}
	c.libActive = true
	c.arm()
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.libActive = false
	if err != nil && c.err == nil {
		c.err = err
	}
	c.turn.Broadcast()
	c.mu.Unlock()
	return n, err
}

// writeFrames sends texts as websocket text frames, in one write.
func (c *corkConn) writeFrames(texts [][]byte) error {
	buf := batchBufs.Get().(*[]byte)
	b := (*buf)[:0]
	for _, p := range texts {
		b = appendTextHeader(b, len(p))
		b = append(b, p...)
	}
	c.mu.Lock()
	for (c.libActive || c.lib.mid()) && c.err == nil {
		c.wait()
	}
	err := c.err
	if err == nil && c.closeSent {
		err = net.ErrClosed
	}
	if err != nil {
		c.mu.Unlock()
		putBatchBuf(buf, b)
		return err
	}
	c.batch = true
	c.arm()
	c.mu.Unlock()
	_, err = c.Conn.Write(b)
	c.mu.Lock()
	c.batch = false
	if err != nil && c.err == nil {
		c.err = err
	}
	c.turn.Broadcast()
	c.mu.Unlock()
	putBatchBuf(buf, b)
	return err
}

func putBatchBuf(buf *[]byte, b []byte) {
	if cap(b) <= 256<<10 {
		*buf = b[:0]
		batchBufs.Put(buf)
	}
}

// appendTextHeader appends the header of an unmasked, final text frame
// with an n-byte payload (RFC 6455, section 5.2).
func appendTextHeader(b []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n < 126:
		return append(b, finText, byte(n))
	case n <= 0xffff:
		return append(b, finText, 126, byte(n>>8), byte(n))
	default:
		u := uint64(n)
		return append(b, finText, 127, byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32), byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
}

// libFrame follows the frames of a websocket byte stream.
type libFrame struct {
	hdr  [14]byte
	hn   int    // header bytes of the current frame seen so far
	need int    // the header's length, once its second byte is seen
	rem  uint64 // payload bytes of the current frame still to come
}

// mid reports whether the stream stopped inside a frame.
func (f *libFrame) mid() bool { return f.hn > 0 || f.rem > 0 }

// feed follows p and reports whether it holds the header of a close frame.
func (f *libFrame) feed(p []byte) (closeFrame bool) {
	for len(p) > 0 {
		if f.rem > 0 {
			n := min(uint64(len(p)), f.rem)
			f.rem -= n
			p = p[n:]
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need = 4
			case 127:
				f.need = 10
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4 // masking key
			}
		}
		if f.hn < 2 || f.hn < f.need {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.rem = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			for _, x := range f.hdr[2:10] {
				f.rem = f.rem<<8 | uint64(x)
			}
		default:
			f.rem = uint64(n)
		}
		if f.hdr[0]&0x0f == 0x8 {
			closeFrame = true
		}
		f.hn = 0
	}
	return closeFrame
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
