package consumer

import (
	"context"
	"sync"
	"time"
)

// pinger pings the connections of a server, each about every PingInterval,
// from one timer: a connection keeps no timer of its own. The interval is
// cut into slots (64, or one per millisecond if fewer), so that few pings
// start at once; a new connection joins the slot that comes round last, and
// each tick starts a ping for every connection of one slot (unless its last
// ping is still waiting for the pong).
type pinger struct {
	used  int           // slots in use; 0: pings are off
	every time.Duration // time between ticks

	mu      sync.Mutex
	slots   [maxPingSlots][]*Conn
	next    int // the slot the next tick pings
	n       int // connections in the slots
	timer   *time.Timer
	running bool // timer is set
}

const maxPingSlots = 64

// setInterval prepares pings every d; a negative d turns them off.
func (p *pinger) setInterval(d time.Duration) {
	if d > 0 {
		p.used = int(min(max(d/time.Millisecond, 1), maxPingSlots))
		p.every = d / time.Duration(p.used)
	}
}

// add starts pinging c.
func (p *pinger) add(c *Conn) {
	if p.used == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := (p.next + p.used - 1) % p.used
	c.pingSlot, c.pingPos = int32(i), int32(len(p.slots[i]))
	p.slots[i] = append(p.slots[i], c)
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

// remove stops pinging c; a ping under way goes on (Conn.end waits for it).
func (p *pinger) remove(c *Conn) {
	if p.used == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slots[c.pingSlot]
	last := s[len(s)-1]
	s[c.pingPos], last.pingPos = last, c.pingPos
	s[len(s)-1] = nil
	p.slots[c.pingSlot] = s[:len(s)-1]
	p.n--
}

func (p *pinger) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.slots[p.next] {
		if c.pinging.CompareAndSwap(false, true) && !c.spawn(c.ping) {
			c.pinging.Store(false)
		}
	}
	p.next = (p.next + 1) % p.used
	if p.running = p.n > 0; p.running {
		p.timer.Reset(p.every)
	}
}

// ping checks the peer is alive; one that does not answer in PingTimeout
// is dropped (1006).
func (c *Conn) ping() {
	defer c.pinging.Store(false)
	// Not derived from c.ctx: a closing transport ends the ping anyway,
	// and a child would leave c.ctx holding a map of children.
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.PingTimeout)
	err := c.t.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.Logger().Info("peer did not answer a ping; closing", "err", err)
		}
		c.closeWith(StatusAbnormal, "", closePeer)
	}
}
