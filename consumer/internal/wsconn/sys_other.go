//go:build !linux

package wsconn

import (
	"net"
	"syscall"
)

// Sockets are watched only on Linux; elsewhere every connection keeps a
// reading goroutine.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readNow(syscall.RawConn, []byte) (int, error) { return 0, ErrIdle } // not reached: no raw conn

func waitReadable(syscall.RawConn) error { return nil } // not reached: no raw conn

func writeNow(syscall.RawConn, []byte) (int, error) { return 0, errWouldBlock } // not reached: no raw conn
