package wsconn

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// Reading without a goroutine per idle connection.
//
// coder/websocket's Read waits for a whole data message, handling control
// frames (ping, pong, close) on the way. To stop it at the right place, the
// sock returns ErrIdle instead of waiting when it is asked for more bytes
// at a message boundary and the socket has none; the library passes the
// error up from Reader, and the caller hands the socket to a poller. A
// boundary is where ReadIdle starts with nothing buffered, or where a ping
// or pong ended while ReadIdle waited for a message (the hooks set in
// Accept); never inside a message, so ErrIdle loses nothing. Once Close
// began, reads wait again: the close handshake reads the peer's answer.
//
// A peer that just sent a message often sends another soon: ReadIdle's
// linger lets the read wait a little (on Go's own poller, like any read)
// before it gives up with ErrIdle.

// Pooled buffers the socket is read into, held only while bytes are pending.
const readBufSize = 4096

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// pend keeps b, read ahead by someone else, for the next reads.
func (s *sock) pend(b []byte) {
	buf := readBufs.Get().(*[]byte)
	if len(b) > cap(*buf) {
		nb := make([]byte, len(b))
		buf = &nb
	}
	*buf = (*buf)[:copy((*buf)[:cap(*buf)], b)]
	s.pending, s.off = buf, 0
}

// Read is the library's path from the network; it reads one at a time.
func (s *sock) Read(p []byte) (int, error) {
	if s.pending == nil {
		if err := s.lingerWait(); err != nil {
			return 0, err
		}
		buf := readBufs.Get().(*[]byte)
		*buf = (*buf)[:cap(*buf)]
		n, err := s.readSocket(*buf)
		if n <= 0 {
			readBufs.Put(buf)
			return 0, err
		}
		*buf = (*buf)[:n]
		s.pending, s.off = buf, 0
	}
	n := copy(p, (*s.pending)[s.off:])
	s.off += n
	if s.off == len(*s.pending) {
		if cap(*s.pending) == readBufSize {
			readBufs.Put(s.pending)
		}
		s.pending = nil
	}
	s.boundary.Store(false)
	return n, nil
}

// readSocket reads what the socket has; at a boundary it does not wait
// (lingerWait did, if the read may linger).
func (s *sock) readSocket(b []byte) (int, error) {
	if s.raw == nil || !s.boundary.Load() || s.stopped.Load() {
		return s.Conn.Read(b)
	}
	return readNow(s.raw, b)
}

// lingerWait waits, at a boundary of a read that may linger, at most the
// linger for the socket to have bytes, holding no buffer meanwhile: a
// reader lingers after every message, and with a pooled buffer held
// through each wait every chatty connection kept one, and the pool lost
// them all at each collection. ErrIdle if nothing came.
func (s *sock) lingerWait() error {
	if s.raw == nil || !s.boundary.Load() || s.stopped.Load() || s.linger <= 0 {
		return nil
	}
	s.mu.Lock()
	if s.stopped.Load() {
		s.mu.Unlock()
		return nil
	}
	s.lingers = true
	_ = s.Conn.SetReadDeadline(time.Now().Add(s.linger))
	s.mu.Unlock()
	err := waitReadable(s.raw)
	s.mu.Lock()
	s.lingers = false
	_ = s.Conn.SetReadDeadline(time.Time{})
	s.mu.Unlock()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrIdle
	}
	return err
}

// readMessage reads a message to its end through a pooled buffer and
// returns a copy of exactly its size: a chat frame of 100 bytes costs the
// collector 100 bytes, not the 512 that io.ReadAll starts with.
func readMessage(r io.Reader) ([]byte, error) {
	buf := readBufs.Get().(*[]byte)
	defer readBufs.Put(buf)
	b := (*buf)[:0]
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			out := make([]byte, len(b))
			copy(out, b)
			if err == io.EOF {
				err = nil
			}
			return out, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than a pooled buffer: grow a copy
		}
	}
}

// ownPong is the pong a client answers sendPing's empty ping with: final,
// opcode pong, masked, no payload; the four bytes after it are its mask.
const ownPongLen = 6

func isOwnPong(b []byte) bool { return len(b) >= ownPongLen && b[0] == 0x8A && b[1] == 0x80 }

// preRead reads what the socket has before the library is asked for a
// message, at a boundary: ErrIdle if nothing came, or only pongs to
// sendPing's pings (taken here: pingAt cleared); else nil, the bytes left
// pending for the library. A pong handed to the library costs a timer, a
// context and wrapped errors (its control frame handling and the ErrIdle
// after it); every idle connection answers a ping per ping interval.
func (s *sock) preRead() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raw == nil || s.stopped.Load() || s.pending != nil || s.br.Buffered() != 0 {
		return nil
	}
	buf := readBufs.Get().(*[]byte)
	*buf = (*buf)[:cap(*buf)]
	n, err := readNow(s.raw, *buf)
	if n <= 0 {
		readBufs.Put(buf)
		if err == ErrIdle {
			return ErrIdle
		}
		return nil // the library reads it again and meets the error
	}
	off := 0
	for isOwnPong((*buf)[off:n]) {
		off += ownPongLen
		s.pingAt.Store(0)
	}
	if off == n {
		readBufs.Put(buf)
		return ErrIdle
	}
	*buf = (*buf)[:n]
	s.pending, s.off = buf, off
	return nil
}

// beginIdleRead marks a boundary if nothing is buffered; false once idle
// reads stopped. s.mu orders it with StopIdleReads.
func (s *sock) beginIdleRead(linger time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Load() || s.raw == nil {
		return false
	}
	s.awaiting.Store(true)
	s.boundary.Store(s.br.Buffered() == 0)
	s.linger = linger
	return true
}

// controlFrameRead runs (as coder/websocket's ping and pong hook) after a
// control frame was read, under coder/websocket's read lock.
func (s *sock) controlFrameRead() {
	if s.awaiting.Load() && s.br.Buffered() == 0 {
		s.boundary.Store(true)
	}
}

// StopIdleReads makes every read wait from now on, cutting a lingering
// read short.
func (s *sock) StopIdleReads() {
	s.mu.Lock()
	s.stopped.Store(true)
	if s.lingers {
		_ = s.Conn.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
}

// The hooks for websocket.AcceptOptions.
func (s *sock) onPing(context.Context, []byte) bool { s.controlFrameRead(); return true }
func (s *sock) onPong(context.Context, []byte) {
	s.pingAt.Store(0)
	s.controlFrameRead()
}
