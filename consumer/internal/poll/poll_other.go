//go:build !linux

package poll

import (
	"log/slog"
	"syscall"
)

// Poller watches sockets only on Linux; elsewhere every connection keeps a
// reading goroutine.
type Poller struct{}

// New returns nil: there is nothing to watch with.
func New(*slog.Logger) *Poller { return nil }

// Watch returns false: a goroutine must read the socket.
func (p *Poller) Watch(*Handle, syscall.RawConn, func()) bool { return false }

// Arm returns false (not reached: nothing is watched).
func (h *Handle) Arm() bool { return false }

// Forget does nothing.
func (h *Handle) Forget() {}
