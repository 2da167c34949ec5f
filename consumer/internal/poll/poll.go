// Package poll lets a server keep no goroutine per idle connection.
//
// Where a socket can be watched (TCP on Linux), no goroutine waits in Read
// while the peer is quiet: the connection's reader reads what came, then
// arms the socket's Handle and returns; the Poller starts a reader again
// (the Handle's wake function) when bytes arrive or the peer closes.
// Elsewhere Watch fails and every connection keeps a reading goroutine.
package poll

import (
	"sync/atomic"
	"syscall"
)

// Handle is one watched socket, made by Poller.Watch.
//
// p, id, raw and wake are set by Watch and never change. armed passes the
// socket between the connection's reader and the poller: the reader sets
// it in Arm and returns; whoever clears it (Wake, from the poller's event or
// from the connection's own closer) starts the one next reader. So at most
// one reader runs at a time, and none is lost.
type Handle struct {
	p     *Poller
	id    uint64 // registration number, never 0 once watched
	raw   syscall.RawConn
	wake  func() // starts a reader; run on a goroutine of its own
	armed atomic.Bool
}

// Wake starts a reader if the socket is armed: its socket is readable, or
// it was closed on this side (the poller hears nothing of that). A func
// value made once per connection (wake) starts without a closure.
func (h *Handle) Wake() {
	if h.armed.CompareAndSwap(true, false) {
		go h.wake()
	}
}
