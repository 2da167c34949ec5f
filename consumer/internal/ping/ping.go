// Package ping pings the connections of a server from one timer: a
// connection keeps no timer of its own.
package ping

import (
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
// used and every are fixed by New. The slots, the entries' places in them,
// and the timer are under mu. An entry's pinging flag is shared with the
// ping it starts, which clears it (Entry.Done).
type Pinger struct {
	used  int           // slots in use; 0: pings are off
	every time.Duration // time between ticks

	mu      sync.Mutex
	slots   [maxSlots][]*Entry
	next    int // the slot the next tick pings
	n       int // entries in the slots
	timer   *time.Timer
	running bool // timer is set
}

const maxSlots = 64

// New returns a pinger that pings every interval; a negative or zero
// interval turns pings off.
func New(interval time.Duration) *Pinger {
	p := &Pinger{}
	if interval > 0 {
		p.used = int(min(max(interval/time.Millisecond, 1), maxSlots))
		p.every = interval / time.Duration(p.used)
	}
	return p
}

// Entry is one connection's place in a Pinger. The zero value is ready; it
// must stay where it is between Add and Remove.
type Entry struct {
	slot, pos int32       // under Pinger.mu
	start     func() bool // starts a ping, false if it could not; set by Add
	pinging   atomic.Bool // a ping waits for its pong
}

// Add starts pinging e: at each of its ticks, start is called (under the
// pinger's lock: it must not block) unless the last ping has not called
// Done yet. start returns false if it could not start the ping.
func (p *Pinger) Add(e *Entry, start func() bool) {
	if p.used == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e.start = start
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

// Remove stops pinging e; a ping under way goes on.
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
func (e *Entry) Done() { e.pinging.Store(false) }

func (p *Pinger) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.slots[p.next] {
		if e.pinging.CompareAndSwap(false, true) && !e.start() {
			e.pinging.Store(false)
		}
	}
	p.next = (p.next + 1) % p.used
	if p.running = p.n > 0; p.running {
		p.timer.Reset(p.every)
	}
}
