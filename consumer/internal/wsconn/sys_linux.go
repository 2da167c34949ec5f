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
	var n int
	var err error
	cerr := raw.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), b)
			if err != syscall.EINTR {
				return true // done, whatever it read: never wait here
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN:
		return 0, ErrIdle
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// writeNow writes what the socket's buffer takes of b without waiting:
// errWouldBlock if it takes nothing.
func writeNow(raw syscall.RawConn, b []byte) (int, error) {
	var n int
	var err error
	cerr := raw.Write(func(fd uintptr) bool {
		for {
			n, err = syscall.Write(int(fd), b)
			if err != syscall.EINTR {
				return true // never wait here
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, cerr
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("write", err)
	}
	return n, nil
}
