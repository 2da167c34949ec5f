package consumer

import (
	"context"
	"sync"
	"time"
)

// pinger pings the connections of a server, each about every PingInterval,
// from one timer: a connection keeps no timer of its own. The interval is
// cut into pingSlots slots, so that few pings start at once; a new
// connection joins the slot that comes round last, and each tick starts a
// ping for every connection of one slot (unless its last ping is still
// waiting for the pong).
type pinger struct {
	mu      sync.Mutex
	slots   [pingSlots][]*Conn
	next    int         // the slot the next tick pings
	n       int         // connections in the slots
	timer   *time.Timer // ticks while running
	running bool
}

const pingSlots = 64

// add starts pinging c.
func (p *pinger) add(c *Conn) {
	interval := c.srv.opts.PingInterval
	if interval < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := (p.next + pingSlots - 1) % pingSlots
	c.pingSlot, c.pingPos = int32(i), int32(len(p.slots[i]))
	p.slots[i] = append(p.slots[i], c)
	p.n++
	if !p.running {
		p.running = true
		tick := max(interval/pingSlots, time.Millisecond)
		if p.timer == nil {
			p.timer = time.AfterFunc(tick, func() { p.tick(tick) })
		} else {
			p.timer.Reset(tick)
		}
	}
}

// remove stops pinging c; a ping under way goes on (Conn.end waits for it).
func (p *pinger) remove(c *Conn) {
	if c.srv.opts.PingInterval < 0 {
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

func (p *pinger) tick(every time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.slots[p.next] {
		if c.pinging.CompareAndSwap(false, true) && !c.spawn(c.ping) {
			c.pinging.Store(false)
		}
	}
	p.next = (p.next + 1) % pingSlots
	if p.running = p.n > 0; p.running {
		p.timer.Reset(every)
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
