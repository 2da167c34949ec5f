//go:build linux

package wsconn

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns the socket under nc if a poller can watch it.
func rawConnOf(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readNow reads what the socket has without waiting: ErrIdle if nothing.
func readNow(raw syscall.RawConn, b []byte) (int, error) {
	n, err := once("read", raw.Read, func(fd int) (int, error) { return syscall.Read(fd, b) }, ErrIdle)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// waitReadable waits until the socket has bytes (or an end or an error to
// read), within its read deadline, without reading them.
func waitReadable(raw syscall.RawConn) error {
	return raw.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err != syscall.EINTR {
				return err != syscall.EAGAIN // else wait for the poller
			}
		}
	})
}

// writeNow writes what the socket's buffer takes of b without waiting:
// errWouldBlock if it takes nothing.
func writeNow(raw syscall.RawConn, b []byte) (int, error) {
	return once("write", raw.Write, func(fd int) (int, error) { return syscall.Write(fd, b) }, errWouldBlock)
}

// once runs op on the socket's descriptor through run (the RawConn's Read
// or Write) one time, again only if a signal interrupted it: it never
// waits for the socket to be ready, and returns notReady if it was not.
func once(name string, run func(func(uintptr) bool) error, op func(fd int) (int, error), notReady error) (int, error) {
	var n int
	var err error
	cerr := run(func(fd uintptr) bool {
		for {
			n, err = op(int(fd))
			if err != syscall.EINTR {
				return true // done, whatever it did: never wait here
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN:
		return 0, notReady
	case err != nil:
		return 0, os.NewSyscallError(name, err)
	}
	return n, nil
}
