package wsconn

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sock is the hijacked connection under a websocket, as coder/websocket
// sees it. The framework writes its text frames straight to it, a whole
// batch framed in one buffer and sent in one write (writeFrames); the
// library writes through it only what it writes itself: pongs, pings, the
// close frame.
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
//
// Ownership: Conn, raw and timeout are set before the library first uses
// the sock and never change. The write state below is under mu. The read
// state (see read.go) belongs to the library's one reader, except the
// atomics and lingers, whose rules are given with them.
type sock struct {
	net.Conn
	raw     syscall.RawConn // nil: not watched, reads always wait
	timeout time.Duration   // 0: no deadline

	mu        sync.Mutex
	turn      sync.Cond // signalled when a write ends; L is mu (set on first wait)
	deadline  time.Time // the write deadline armed on Conn
	batch     bool      // a batch is being written
	libActive bool      // a write of the library is under way
	lib       libFrame  // where the library's output stands
	closeSent bool      // the library wrote its close frame
	err       error     // a write failed: the stream is broken

	// pingAt: when the first ping that no pong answered yet went out
	// (sendPing; time since epoch, 0: none). Its pong clears it: taken
	// by ReadIdle's preRead, or by the library's reader (onPong).
	pingAt atomic.Int64

	// The read side: the library's reader and ReadIdle (see read.go).
	br       *bufio.Reader // coder/websocket's reader over this sock
	pending  *[]byte       // read from the socket, not yet consumed: (*pending)[off:]
	off      int
	boundary atomic.Bool   // the next socket read starts a frame: return ErrIdle rather than wait
	awaiting atomic.Bool   // ReadIdle waits for a data message: a control frame ends at a boundary
	linger   time.Duration // how long a read at a boundary may wait; set by beginIdleRead
	lingers  bool          // a read waits with a deadline; under mu
	stopped  atomic.Bool   // reads wait: Close began, or the poller could not take the socket
}

// wait waits for the end of a write; called with s.mu held.
func (s *sock) wait() {
	if s.turn.L == nil {
		s.turn.L = &s.mu
	}
	s.turn.Wait()
}

// Write is the library's path to the network.
func (s *sock) Write(p []byte) (int, error) {
	s.mu.Lock()
	for (s.batch || s.libActive) && s.err == nil {
		s.wait()
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.lib.feed(p) {
		s.closeSent = true
	}
	s.libActive = true
	s.arm()
	s.mu.Unlock()
	n, err := s.Conn.Write(p)
	s.ended(&s.libActive, err)
	return n, err
}

// ended ends a write that set *active (libActive or batch) under s.mu
// before it began: it clears it, keeps the first error, and wakes the
// writes waiting for their turn.
func (s *sock) ended(active *bool, err error) {
	s.mu.Lock()
	*active = false
	if err != nil && s.err == nil {
		s.err = err
	}
	s.turn.Broadcast()
	s.mu.Unlock()
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// writeFrames sends texts as websocket text frames, in one write.
func (s *sock) writeFrames(texts [][]byte) error {
	buf := batchBufs.Get().(*[]byte)
	b := (*buf)[:0]
	for _, p := range texts {
		b = appendTextHeader(b, len(p))
		b = append(b, p...)
	}
	s.mu.Lock()
	for (s.libActive || s.lib.mid()) && s.err == nil {
		s.wait()
	}
	err := s.err
	if err == nil && s.closeSent {
		err = net.ErrClosed
	}
	if err != nil {
		s.mu.Unlock()
		putBatchBuf(buf, b)
		return err
	}
	s.batch = true
	s.arm()
	s.mu.Unlock()
	_, err = s.Conn.Write(b)
	s.ended(&s.batch, err)
	putBatchBuf(buf, b)
	return err
}

// pingFrame is an unmasked ping frame with no payload.
var pingFrame = []byte{0x89, 0x00}

// epoch is what pingAt counts from (monotonic).
var epoch = time.Now()

// errWouldBlock: the socket's buffer takes nothing now.
var errWouldBlock = errors.New("wsconn: the socket's buffer is full")

// sendPing writes a ping frame if it can at once: when no write is under
// way (else false, no error) and the socket's buffer has room (else false,
// no error); it never waits. Its pong clears pingAt.
func (s *sock) sendPing() (bool, error) {
	if s.raw == nil || s.timeout <= 0 {
		return false, nil
	}
	s.mu.Lock()
	if s.err == nil && s.closeSent {
		s.mu.Unlock()
		return false, net.ErrClosed
	}
	if s.err != nil || s.batch || s.libActive || s.lib.mid() {
		err := s.err
		s.mu.Unlock()
		return false, err
	}
	// Before the write: its pong may be read before the write returns.
	now := int64(time.Since(epoch))
	first := s.pingAt.CompareAndSwap(0, now)
	// A raw write, too, fails once the write deadline has passed: on a
	// socket quiet for longer than timeout the last one armed has.
	s.arm()
	// Under s.mu: no other write starts meanwhile, and this one does not
	// wait.
	n, err := writeNow(s.raw, pingFrame)
	if err != nil && first {
		s.pingAt.CompareAndSwap(now, 0) // no ping went out
	}
	switch {
	case err == errWouldBlock:
		s.mu.Unlock()
		return false, nil
	case err != nil:
		s.err = err
		s.turn.Broadcast()
		s.mu.Unlock()
		return false, err
	case n < len(pingFrame):
		// The buffer took part of the frame: the rest goes as a batch that
		// may wait (bounded by the write deadline), on its own goroutine.
		s.batch = true
		s.arm()
		s.mu.Unlock()
		go s.finishWrite(pingFrame[n:])
		return true, nil
	}
	s.mu.Unlock()
	return true, nil
}

// finishWrite writes the rest of a frame that sendPing began.
func (s *sock) finishWrite(rest []byte) {
	_, err := s.Conn.Write(rest)
	s.ended(&s.batch, err)
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
// with s.mu held.
func (s *sock) arm() {
	if s.timeout <= 0 {
		return
	}
	now := time.Now()
	if s.deadline.Sub(now) >= s.timeout-s.timeout/8 {
		return
	}
	s.deadline = now.Add(s.timeout)
	_ = s.Conn.SetWriteDeadline(s.deadline)
}
