//go:build !linux

package consumer

import "log/slog"

// poller watches sockets only on Linux; elsewhere every connection keeps a
// reading goroutine.
type poller struct{}

func newPoller(*slog.Logger) *poller { return nil }

func (p *poller) watch(*Conn) bool { return false }

func (p *poller) arm(*Conn) bool { return false }

func (p *poller) forget(*Conn) {}
