//go:build linux

package consumer

import (
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
)

// poller watches the sockets of a server's idle connections with an epoll
// instance of its own, so that an idle connection keeps no goroutine (see
// readiness.go). One goroutine waits in epoll_wait while any connection is
// watched; it starts a connection's reader when its socket has bytes or was
// closed by the peer.
//
// Each socket is armed one-shot: one event, then nothing until the reader
// re-arms it. Events carry the connection's registration number, not its
// file descriptor, which the kernel reuses once the socket is closed.
type poller struct {
	log *slog.Logger

	mu    sync.RWMutex // Lock: the fields below; RLock: epfd stays open
	epfd  int          // -1 while no connection is watched
	wakeW int          // write end of the pipe that stops the goroutine
	conns map[uint64]*Conn
	last  uint64 // registration numbers; 0 is the pipe
}

func newPoller(log *slog.Logger) *poller {
	return &poller{log: log, epfd: -1, conns: make(map[uint64]*Conn)}
}

// watch registers c; false if its transport has no socket to watch (or
// epoll fails): then a goroutine must read it.
func (p *poller) watch(c *Conn) bool {
	ws, ok := c.t.(*wsconn.Conn)
	if !ok || ws.RawConn() == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		if err := p.open(); err != nil {
			p.log.Warn("cannot watch sockets with epoll; each connection keeps a reading goroutine", "err", err)
			return false
		}
	}
	p.last++
	c.pollID = p.last
	p.conns[c.pollID] = c
	return true
}

// arm hands c's socket to the poller: the next bytes (or the peer's close)
// start a reader. It returns false if that failed and the caller must go on
// reading c itself.
func (p *poller) arm(c *Conn) bool {
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(c.pollID), Pad: int32(c.pollID >> 32),
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	c.armed.Store(true) // from here on an event or Conn.wake may start a reader
	var err error
	cerr := c.t.(*wsconn.Conn).RawConn().Control(func(fd uintptr) {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if err == syscall.ENOENT { // the first time
			err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr == nil && err == nil {
		return true
	}
	if cerr == nil {
		p.log.Warn("cannot watch a socket with epoll; its connection keeps a reading goroutine", "err", err)
	}
	// Closed or not watched: unless a reader started meanwhile, it is the
	// caller's to read.
	return !c.armed.CompareAndSwap(true, false)
}

// forget unregisters c, whose socket is closed or about to be.
func (p *poller) forget(c *Conn) {
	if c.pollID == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c.pollID)
	if len(p.conns) == 0 {
		_, _ = syscall.Write(p.wakeW, []byte{1}) // the goroutine stops until the next connection
	}
}

// open creates the epoll instance and starts its goroutine; p.mu is held.
func (p *poller) open() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return os.NewSyscallError("pipe2", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // registration 0
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(pipe[0])
		syscall.Close(pipe[1])
		return os.NewSyscallError("epoll_ctl", err)
	}
	p.epfd, p.wakeW = epfd, pipe[1]
	go p.run(epfd, pipe[0])
	return nil
}

// run waits for events and starts readers, until no connection is left.
func (p *poller) run(epfd, wakeR int) {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err != nil {
			if err != syscall.EINTR {
				p.log.Error("epoll_wait failed; retrying", "err", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		p.mu.Lock()
		stop := false
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				drain(wakeR)
				stop = len(p.conns) == 0
			} else if c := p.conns[id]; c != nil {
				c.wake()
			}
		}
		if stop {
			syscall.Close(epfd)
			syscall.Close(wakeR)
			syscall.Close(p.wakeW)
			p.epfd, p.wakeW = -1, -1
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

func drain(fd int) {
	var b [64]byte
	for {
		if n, _ := syscall.Read(fd, b[:]); n <= 0 {
			return
		}
	}
}
