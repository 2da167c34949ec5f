package consumer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Reading without a goroutine per idle connection.
//
// Where the server can watch a connection's socket (TCP on Linux, see
// poller), no goroutine waits in Read while the peer is quiet: the poller
// starts a reader (Conn.readReady) when bytes arrive; the reader handles the
// messages that came and hands the socket back to the poller as soon as no
// byte is left to read.
//
// coder/websocket's Read waits for a whole data message, handling control
// frames (ping, pong, close) on the way. To stop it at the right place, the
// socket reader below returns errIdle instead of waiting when it is asked for
// more bytes at a message boundary and the socket has none. A boundary is
// where readIdle starts with nothing buffered, or where a ping or pong ended
// while readIdle waited for a message (the hooks set in ServeWebSocket);
// never inside a message, so errIdle loses nothing. Once Close began, reads
// wait again: the close handshake reads the peer's answer.
//
// A peer that just sent a message often sends another soon: after one, the
// reader waits up to readLinger for the next (on Go's own poller, like any
// read) before it hands the socket back. Chatty connections thus keep their
// reader, as they would without the poller, and only quiet ones give it up.

// errIdle is returned by reads that would wait for a quiet peer.
var errIdle = errors.New("consumer: nothing to read yet")

// idleReader is a transport whose socket a poller can watch.
type idleReader interface {
	// rawConn returns the socket, nil if there is none to watch.
	rawConn() syscall.RawConn
	// readIdle is Read, except that it returns errIdle rather than wait
	// longer than linger for a message that has not begun to arrive.
	readIdle(ctx context.Context, linger time.Duration) (websocket.MessageType, []byte, error)
	// stopIdleReads makes readIdle wait like Read from now on.
	stopIdleReads()
}

var _ idleReader = wsTransport{}

func (t wsTransport) rawConn() syscall.RawConn {
	if t.cork == nil {
		return nil
	}
	return t.cork.raw
}

func (t wsTransport) stopIdleReads() { t.cork.stopIdleReads() }

func (t wsTransport) readIdle(ctx context.Context, linger time.Duration) (websocket.MessageType, []byte, error) {
	r := t.cork
	if !r.beginIdleRead(linger) {
		return t.Read(ctx)
	}
	typ, msg, err := t.c.Reader(ctx)
	r.awaiting.Store(false)
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(msg)
	return typ, data, err
}

// Pooled buffers the socket is read into, held only while bytes are pending.
const readBufSize = 4096

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// idleReads is the read side of a corkConn. Only coder/websocket's reader
// (it reads one at a time) calls Read, and readIdle calls beginIdleRead
// between reads.
type idleReads struct {
	raw syscall.RawConn // nil: not watched, reads always wait
	br  *bufio.Reader   // coder/websocket's reader over this conn

	pending *[]byte // read from the socket, not yet consumed: (*pending)[off:]
	off     int

	boundary atomic.Bool   // the next socket read starts a frame: return errIdle rather than wait
	awaiting atomic.Bool   // readIdle waits for a data message: a control frame ends at a boundary
	linger   time.Duration // how long a read at a boundary may wait; set by beginIdleRead
	lingers  bool          // a read waits with a deadline, under corkConn.mu

	stopped atomic.Bool // reads wait: Close began, or the poller could not take the socket
}

// pend keeps b, read ahead by someone else, for the next reads.
func (r *idleReads) pend(b []byte) {
	buf := readBufs.Get().(*[]byte)
	if len(b) > cap(*buf) {
		nb := make([]byte, len(b))
		buf = &nb
	}
	*buf = (*buf)[:copy((*buf)[:cap(*buf)], b)]
	r.pending, r.off = buf, 0
}

func (c *corkConn) Read(p []byte) (int, error) {
	r := &c.idleReads
	if r.pending == nil {
		buf := readBufs.Get().(*[]byte)
		*buf = (*buf)[:cap(*buf)]
		n, err := c.readSocket(*buf)
		if n <= 0 {
			readBufs.Put(buf)
			return 0, err
		}
		*buf = (*buf)[:n]
		r.pending, r.off = buf, 0
	}
	n := copy(p, (*r.pending)[r.off:])
	r.off += n
	if r.off == len(*r.pending) {
		if cap(*r.pending) == readBufSize {
			readBufs.Put(r.pending)
		}
		r.pending = nil
	}
	r.boundary.Store(false)
	return n, nil
}

// readSocket reads what the socket has; at a boundary it waits at most
// linger.
func (c *corkConn) readSocket(b []byte) (int, error) {
	r := &c.idleReads
	if r.raw == nil || !r.boundary.Load() || r.stopped.Load() {
		return c.Conn.Read(b)
	}
	if r.linger <= 0 {
		return readNow(r.raw, b)
	}
	c.mu.Lock()
	if r.stopped.Load() {
		c.mu.Unlock()
		return c.Conn.Read(b)
	}
	r.lingers = true
	_ = c.Conn.SetReadDeadline(time.Now().Add(r.linger))
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	r.lingers = false
	_ = c.Conn.SetReadDeadline(time.Time{})
	c.mu.Unlock()
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errIdle
	}
	return n, err
}

// beginIdleRead marks a boundary if nothing is buffered; false once idle
// reads stopped. c.mu orders it with stopIdleReads.
func (c *corkConn) beginIdleRead(linger time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.idleReads
	if r.stopped.Load() || r.raw == nil {
		return false
	}
	r.awaiting.Store(true)
	r.boundary.Store(r.br.Buffered() == 0)
	r.linger = linger
	return true
}

// controlFrameRead runs (as coder/websocket's ping and pong hook) after a
// control frame was read, under coder/websocket's read lock.
func (r *idleReads) controlFrameRead() {
	if r.awaiting.Load() && r.br.Buffered() == 0 {
		r.boundary.Store(true)
	}
}

// stopIdleReads makes every read wait from now on. Close calls it first: the
// close handshake, possibly on another goroutine, reads the peer's answer,
// and a read that lingers gives way to it at once.
func (c *corkConn) stopIdleReads() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.stopped.Store(true)
	if c.lingers {
		_ = c.Conn.SetReadDeadline(time.Now())
	}
	c.mu.Unlock()
}

// The hooks for websocket.AcceptOptions.
func (c *corkConn) onPing(context.Context, []byte) bool { c.controlFrameRead(); return true }
func (c *corkConn) onPong(context.Context, []byte)      { c.controlFrameRead() }
