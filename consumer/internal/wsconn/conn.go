// Package wsconn is the websocket transport of package consumer: a
// coder/websocket connection whose text frames the framework writes itself,
// a whole batch in one write, and whose reads can stop at a message
// boundary instead of waiting for a quiet peer, so that a poller can watch
// the socket instead of a goroutine (see ReadIdle).
//
// Both are bets on how coder/websocket uses the net.Conn it is handed; the
// package's tests pin every such behaviour (library_test.go), so that an
// upgrade that breaks one fails a test.
package wsconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// Options configures Accept.
type Options struct {
	// ReadLimit is the largest message the peer may send; a bigger one
	// fails Read with websocket.ErrMessageTooBig, and the library closes
	// the connection with 1009.
	ReadLimit int64
	// WriteTimeout bounds every write to the network. Zero leaves writes
	// unbounded and turns off the own write path (see Conn.OwnWrites).
	WriteTimeout time.Duration
}

// Conn is an accepted websocket. It is a consumer.Transport and a
// consumer.BatchWriter.
//
// Its methods may be called concurrently as consumer.Transport allows: one
// goroutine reads (Read or ReadIdle), one writes (Write, WriteBatch or
// WriteFrames), and Ping, Close, CloseNow and StopIdleReads come from any
// goroutine. The socket underneath (sock) keeps the library's writes and
// the framework's batches from interleaving, under its own lock.
type Conn struct {
	ws *websocket.Conn
	s  *sock
}

// Accept completes the websocket handshake of r (compression off, the
// origin not checked: the caller did). On failure Accept has answered the
// client.
func Accept(w http.ResponseWriter, r *http.Request, opts Options) (*Conn, error) {
	s := &sock{timeout: opts.WriteTimeout}
	ws, err := websocket.Accept(&hijacker{ResponseWriter: w, s: s}, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
		OnPingReceived:     s.onPing,
		OnPongReceived:     s.onPong,
	})
	if err != nil {
		return nil, err
	}
	if s.Conn == nil { // the library did not hijack through us
		_ = ws.CloseNow()
		return nil, errors.New("wsconn: the connection was not hijacked through the writer given to websocket.Accept")
	}
	// The library put what the handshake's reader held (nothing: Hijack
	// took it, see pend) before the sock, in an io.MultiReader over a
	// bytes.Reader that the connection would keep for its life: 130 bytes
	// of every idle connection. Nothing was read through them yet.
	if s.br.Buffered() == 0 {
		s.br.Reset(s)
	}
	ws.SetReadLimit(opts.ReadLimit)
	return &Conn{ws: ws, s: s}, nil
}

// Read returns the next message. After the peer closed, the error carries
// its close code (websocket.CloseStatus).
func (c *Conn) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	return c.ws.Read(ctx)
}

// Write sends one text message through the library.
func (c *Conn) Write(ctx context.Context, text []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, text)
}

// Ping sends a ping and waits for its pong (someone must be reading).
func (c *Conn) Ping(ctx context.Context) error { return c.ws.Ping(ctx) }

// SendPing sends a ping without waiting for anything: false (and no error)
// if a write is under way or the socket's buffer is full, when Ping is
// the way. Unanswered tells whether its pong came; someone must be reading.
func (c *Conn) SendPing() (bool, error) { return c.s.sendPing() }

// Unanswered returns how long ago the first ping sent by SendPing that no
// pong has answered yet went out; 0 if every one was answered.
func (c *Conn) Unanswered() time.Duration {
	at := c.s.pingAt.Load()
	if at == 0 {
		return 0
	}
	return max(time.Since(epoch)-time.Duration(at), time.Nanosecond)
}

// Close sends a close frame and waits, a while, for the peer's.
func (c *Conn) Close(code websocket.StatusCode, reason string) error {
	c.s.StopIdleReads()
	return c.ws.Close(code, reason)
}

// CloseNow closes the socket without a close handshake.
func (c *Conn) CloseNow() error {
	c.s.StopIdleReads()
	return c.ws.CloseNow()
}

// WriteBatch sends texts as text frames: in one write when the own write
// path is on, else one library write each, bounded by ctx.
func (c *Conn) WriteBatch(ctx context.Context, texts [][]byte) error {
	if c.OwnWrites() {
		return c.WriteFrames(texts)
	}
	for _, p := range texts {
		if err := c.ws.Write(ctx, websocket.MessageText, p); err != nil {
			return err
		}
	}
	return nil
}

// OwnWrites reports whether WriteFrames may be used: the write deadline
// bounds each write, so a batch needs no context (and no timer) of its own.
func (c *Conn) OwnWrites() bool { return c.s.timeout > 0 }

// WriteFrames sends texts as unmasked final text frames, framed here and
// sent in one write, bounded by the write timeout, without a context or a
// lock round trip per frame in the library. It fails once the library has
// written its close frame. Only with OwnWrites.
func (c *Conn) WriteFrames(texts [][]byte) error { return c.s.writeFrames(texts) }

// RawConn returns the socket for a poller to watch, nil if it has none (not
// a TCP socket, or not on Linux).
func (c *Conn) RawConn() syscall.RawConn { return c.s.raw }

// ErrIdle is returned by ReadIdle when the peer is quiet.
var ErrIdle = errors.New("wsconn: nothing to read yet")

// ReadIdle is Read, except that it returns ErrIdle rather than wait longer
// than linger for a message that has not begun to arrive (see read.go). It
// reads like Read once StopIdleReads ran or if there is no socket to watch.
func (c *Conn) ReadIdle(ctx context.Context, linger time.Duration) (websocket.MessageType, []byte, error) {
	if !c.s.beginIdleRead(linger) {
		return c.Read(ctx)
	}
	if linger <= 0 {
		if err := c.s.preRead(); err != nil {
			c.s.awaiting.Store(false)
			return 0, nil, err
		}
	}
	typ, msg, err := c.ws.Reader(ctx)
	c.s.awaiting.Store(false)
	if err != nil {
		return 0, nil, err
	}
	data, err := readMessage(msg)
	return typ, data, err
}

// StopIdleReads makes ReadIdle wait like Read from now on. Close and
// CloseNow call it first: the close handshake, possibly on another
// goroutine, reads the peer's answer, and a read that lingers gives way to
// it at once.
func (c *Conn) StopIdleReads() { c.s.StopIdleReads() }

// hijacker hands coder/websocket the sock instead of the bare connection.
// s exists before the handshake, for the ping and pong hooks; Hijack
// connects it.
type hijacker struct {
	http.ResponseWriter
	s *sock
}

// Size of the buffers coder/websocket reads and writes through. Neither
// holds data while the connection is idle: the reader is refilled from a
// pooled buffer (see sock.Read), and the library writes only control
// frames: a ping or a close frame of ours fits whole (one write), a pong
// with a long payload takes a few.
const (
	libReadBufSize  = 16
	libWriteBufSize = 32
)

// Hijack implements http.Hijacker for coder/websocket.
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("wsconn: %w", err)
	}
	s := h.s
	s.Conn = nc
	s.raw = rawConnOf(nc)
	// Keep what net/http read ahead (a frame the client sent right after
	// its handshake request), not net/http's 4 KiB buffers. The hijacked
	// writer is empty (net/http flushed the 101 response).
	if n := brw.Reader.Buffered(); n > 0 {
		head, _ := brw.Reader.Peek(n)
		s.pend(head)
	}
	s.br = bufio.NewReaderSize(s, libReadBufSize)
	return s, bufio.NewReadWriter(s.br, bufio.NewWriterSize(s, libWriteBufSize)), nil
}
