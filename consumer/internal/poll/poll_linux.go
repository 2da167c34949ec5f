//go:build linux

package poll

import (
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Poller watches the sockets of a server's idle connections with an epoll
// instance of its own. One goroutine waits in epoll_wait while any socket
// is watched, and stops when none is left.
//
// Each socket is armed one-shot: one event, then nothing until its reader
// arms it again. Events carry the Handle's registration number, not the
// file descriptor, which the kernel reuses once the socket is closed.
//
// mu's Lock guards the fields below it; its RLock keeps epfd open while a
// socket is armed.
type Poller struct {
	log *slog.Logger

	mu    sync.RWMutex
	epfd  int // -1 while no socket is watched
	wakeW int // write end of the pipe that stops the goroutine
	conns map[uint64]*Handle
	last  uint64 // registration numbers; 0 is the pipe
}

// New returns a poller; it logs to log why a socket could not be watched.
func New(log *slog.Logger) *Poller {
	return &Poller{log: log, epfd: -1, conns: make(map[uint64]*Handle)}
}

// Watch registers raw in h, whose wake will start the socket's reader. It
// returns false if raw is nil or epoll fails: then a goroutine must read the
// socket. h must stay where it is until Forget.
func (p *Poller) Watch(h *Handle, raw syscall.RawConn, wake func()) bool {
	if p == nil || raw == nil {
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
	h.p, h.id, h.raw, h.wake = p, p.last, raw, wake
	p.conns[h.id] = h
	return true
}

// Arm hands the socket to the poller: the next bytes (or the peer's close)
// start a reader. It returns false if that failed and the caller must go on
// reading itself.
func (h *Handle) Arm() bool {
	p := h.p
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(h.id), Pad: int32(h.id >> 32),
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	h.armed.Store(true) // from here on an event or Wake may start a reader
	var err error
	cerr := h.raw.Control(func(fd uintptr) {
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
	return !h.armed.CompareAndSwap(true, false)
}

// Forget unregisters h, whose socket is closed or about to be. It does
// nothing if h was never watched.
func (h *Handle) Forget() {
	p := h.p
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, h.id)
	if len(p.conns) == 0 {
		_, _ = syscall.Write(p.wakeW, []byte{1}) // the goroutine stops until the next socket
	}
}

// open creates the epoll instance and starts its goroutine; p.mu is held.
func (p *Poller) open() error {
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

// run waits for events and starts readers, until no socket is left.
func (p *Poller) run(epfd, wakeR int) {
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
			} else if h := p.conns[id]; h != nil {
				h.Wake()
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
