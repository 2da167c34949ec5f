// Package ping pings the connections of a server from one timer: a
// connection keeps no timer of its own, and a ping that its transport can
// send without waiting (Entry.Await) needs no goroutine either.
package ping

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pinger starts a ping for each of its entries about every interval. The
// interval is cut into slots (64, or one per millisecond if fewer), so that
// few pings start at once; a new entry joins the slot that comes round
// last, and each tick starts a ping for every entry of one slot unless its
// last ping is still waiting for the pong.
//
// A ping either ends on its own (it waits for the pong somewhere and calls
// Entry.Done) or is checked by the pinger: the entry awaits (Entry.Await),
// and the tick that comes timeout after the ping's asks the entry whether
// the pong came.
//
// used, every and lag are fixed by New. The slots, the entries' places in
// them, and the timer are under mu. An entry's state is shared with the
// ping it starts.
type Pinger struct {
	used  int           // slots in use; 0: pings are off
	every time.Duration // time between ticks
	lag   int           // slots between a ping and its check (1 to used)

	mu      sync.Mutex
	slots   [maxSlots][]*Entry
	next    int // the slot the next tick pings
	n       int // entries in the slots
	timer   *time.Timer
	running bool // timer is set
}

const maxSlots = 64

// New returns a pinger that pings every interval and checks an awaited
// ping timeout after it (rounded up to a slot, at most interval); a
// negative or zero interval turns pings off.
func New(interval, timeout time.Duration) *Pinger {
	p := &Pinger{}
	if interval > 0 {
		p.used = int(min(max(interval/time.Millisecond, 1), maxSlots))
		p.every = interval / time.Duration(p.used)
		p.lag = int(min(max((timeout+p.every-1)/p.every, 1), time.Duration(p.used)))
	}
	return p
}

// Entry states.
const (
	idle     = iota
	pinging  // a ping is under way and calls Done when it ends
	awaiting // a ping was sent; the pinger checks it
	failed   // its check failed: no more pings or checks
)

// Entry is one connection's place in a Pinger. The zero value is ready; it
// must stay where it is between Add and Remove.
type Entry struct {
	slot, pos int32                 // under Pinger.mu
	ping      func(check bool) bool // set by Add
	state     atomic.Uint32
}

// Add starts pinging e. At each of its ticks, unless its last ping is
// still under way, ping(false) is called to start one (outside the
// pinger's lock, but it must not block: it holds up the slot's other
// pings): false if it could not. It may still be called once just after
// Remove. A ping that was started
// with Await is checked timeout later with ping(true) (outside the lock):
// true if its pong came, and the entry is pinged on; false if not, and
// ping must see to the connection's end (the entry is pinged no more).
func (p *Pinger) Add(e *Entry, ping func(check bool) bool) {
	if p.used == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e.ping = ping
	i := (p.next + p.used - 1) % p.used
	e.slot, e.pos = int32(i), int32(len(p.slots[i]))
	p.slots[i] = append(p.slots[i], e)
	p.n++
	if !p.running {
		p.running = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.every, p.tick)
		} else {
			p.timer.Reset(p.every)
		}
	}
}

// Remove stops pinging e; a ping under way goes on, and an awaited one is
// not checked.
func (p *Pinger) Remove(e *Entry) {
	if p.used == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slots[e.slot]
	last := s[len(s)-1]
	s[e.pos], last.pos = last, e.pos
	s[len(s)-1] = nil
	p.slots[e.slot] = s[:len(s)-1]
	p.n--
}

// Done marks the end of e's ping: the next tick may start another.
func (e *Entry) Done() { e.state.Store(idle) }

// Await, called by the ping being started, hands its check to the pinger
// (see Add) instead of a call to Done.
func (e *Entry) Await() { e.state.Store(awaiting) }

func (p *Pinger) tick() {
	p.mu.Lock()
	// The pings sent lag slots ago are checked; when lag is the whole
	// interval that is this slot, checked before its next pings.
	var due []*Entry
	for _, e := range p.slots[(p.next-p.lag+p.used)%p.used] {
		if e.state.Load() == awaiting {
			due = append(due, e)
		}
	}
	checkFirst := p.lag == p.used
	var starting []*Entry
	if !checkFirst {
		starting = p.slotNow()
	}
	p.mu.Unlock()
	start(starting)
	for _, e := range due {
		if e.ping(true) {
			e.state.CompareAndSwap(awaiting, idle)
		} else {
			e.state.CompareAndSwap(awaiting, failed)
		}
	}
	if checkFirst {
		p.mu.Lock()
		starting = p.slotNow()
		p.mu.Unlock()
		start(starting)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next = (p.next + 1) % p.used
	if p.running = p.n > 0; p.running {
		p.timer.Reset(p.every)
	}
}

// slotNow returns the entries of the slot p.next, to start their pings
// after p.mu is released: a ping writes to its socket, and a slot holds a
// few hundred entries at 10 000 connections. Under the lock, a starved
// node's pinger, preempted in the middle, held up every connection
// starting or ending (Add, Remove) for as long. Called with p.mu held.
func (p *Pinger) slotNow() []*Entry { return slices.Clone(p.slots[p.next]) }

// start starts the pings of entries.
func start(entries []*Entry) {
	for _, e := range entries {
		if e.state.CompareAndSwap(idle, pinging) && !e.ping(false) {
			e.state.CompareAndSwap(pinging, idle)
		}
	}
}
