//go:build !linux

package consumer

import (
	"log/slog"
	"net"
	"syscall"
)

// poller watches sockets only on Linux; elsewhere every connection keeps a
// reading goroutine.
type poller struct{}

func newPoller(*slog.Logger) *poller { return nil }

func (p *poller) watch(*Conn) bool { return false }

func (p *poller) arm(*Conn) bool { return false }

func (p *poller) forget(*Conn) {}

func rawConnOf(net.Conn) syscall.RawConn { return nil }

func readNow(syscall.RawConn, []byte) (int, error) { return 0, errIdle } // not reached: no raw conn
