// Package tasks tracks the goroutines a connection starts while it has
// work, so that the connection can stop them and wait for them.
package tasks

import (
	"sync"

	"github.com/chatterpro/chatterpro/internal/stack"
)

// Group counts the running goroutines of one connection. Add (or Go)
// before starting one, Done when it ends; after Stop, Add refuses. All its
// state is under mu and wg; every method is safe for concurrent use.
//
// The zero value is ready.
type Group struct {
	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// Add counts a goroutine about to start; false once the group is stopped
// (then it must not start). The hot paths start their goroutine themselves
// after Add, with a func value made once, so that starting allocates
// nothing: "go f()" with f a field allocates no closure, Go's does.
func (g *Group) Add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Add(1)
	return true
}

// Done marks the end of a goroutine counted by Add.
func (g *Group) Done() { g.wg.Done() }

// Go runs f on a counted goroutine; false once the group is stopped.
func (g *Group) Go(f func()) bool {
	if !g.Add() {
		return false
	}
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// Stop refuses new goroutines and waits for those running to end.
func (g *Group) Stop() {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.wg.Wait()
}

// GrowStack grows the calling goroutine's stack to 4 KiB at once, if it is
// smaller.
//
// The goroutines that run handlers (a dispatcher, a woken reader) start
// when there is work and end with it. The runtime starts goroutines with a
// stack the size its goroutines used on average; with no goroutine parked
// per idle connection that is its smallest, 2 KiB, and a handler chain then
// outgrows it deep inside, where copying the stack is dear (it took a
// tenth of the server's CPU in a busy fan-out). Growing it first, while it
// is shallow, is cheap; 4 KiB holds the handler chains seen so far.
func GrowStack() { stack.Grow4K() }
