package channellayer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis Cluster. Sharded pub/sub (SSUBSCRIBE) is per shard: a subscription
// lives on the master that owns the channel's slot, and one connection may
// only carry channels of that master's slots. The layer keeps one pub/sub
// connection per master that owns one of its channels (its groups with
// local members and its process channel), opened on the first channel
// placed there and closed with the last.
//
// A shard connection that fails (the node died or restarted, a failover
// replaced it, a command was answered with MOVED or CLUSTERDOWN) ends; the
// subscriber places its channels again on the owners the cluster names by
// then, with a backoff while that fails, and gap repair delivers from
// history what was recorded meanwhile. A slot that moves while its node
// lives (resharding) ends with a sunsubscribe push from that node for each
// channel of the slot: the channel is placed again the same way.
//
// While a channel the layer had confirmed is not placed again, the layer is
// not ready.

// newShardConn opens the pub/sub connection to one master and starts its
// receive loop.
func (r *Redis) newShardConn(addr string, node *redis.Client) *psConn {
	ctx, cancel := context.WithCancel(r.ctx)
	c := &psConn{
		r:      r,
		addr:   addr,
		shard:  true,
		ps:     node.Subscribe(ctx),
		ctx:    ctx,
		cancel: cancel,
		unsubs: make(map[string]int),
	}
	r.wg.Add(1)
	go c.receiveLoop()
	return c
}

// close ends a shard connection on purpose: its receive loop ends quietly.
func (c *psConn) close() {
	c.cancel()
	_ = c.ps.Close()
}

// kill breaks a shard connection: its receive loop reports it dead.
func (c *psConn) kill() { _ = c.ps.Close() }

// die is the end of a failed shard connection, called by its receive loop:
// its channels are no longer live, and the subscriber places them again.
func (c *psConn) die(err error) {
	r := c.r
	_ = c.ps.Close()
	r.log.Debug("channellayer: redis shard pub/sub connection lost", "addr", c.addr, "err", err)
	r.mu.Lock()
	r.dead = append(r.dead, c)
	for _, s := range r.subs {
		if s.conn == c {
			s.live = false
		}
	}
	r.mu.Unlock()
	r.updateReady(fmt.Errorf("shard %s: %w", c.addr, err))
	r.wake()
}

// unsubscribed handles a sunsubscribe: the answer to our own SUNSUBSCRIBE,
// or the shard dropping a channel whose slot moved away.
func (c *psConn) unsubscribed(ch string) {
	r := c.r
	r.mu.Lock()
	if c.unsubs[ch] > 0 {
		c.unsubs[ch]--
		if c.unsubs[ch] == 0 {
			delete(c.unsubs, ch)
		}
		r.mu.Unlock()
		return
	}
	r.moved = append(r.moved, moved{conn: c, channel: ch})
	if s := r.subs[ch]; s != nil && s.conn == c {
		s.live = false
	}
	r.mu.Unlock()
	r.updateReady(fmt.Errorf("shard %s dropped %s: its slot moved", c.addr, ch))
	r.wake()
}

// collectLost takes the shard connections that died and the channels that
// moved, and queues their channels for placing again.
func (r *Redis) collectLost(st *subState) {
	r.mu.Lock()
	dead, mv := r.dead, r.moved
	r.dead, r.moved = nil, nil
	r.mu.Unlock()
	if len(dead)+len(mv) > 0 {
		// Refresh the slot map now, so that it is fresh by the time the
		// backoff has passed and the channels are placed again.
		r.cc.ReloadState(r.ctx)
	}
	for _, c := range dead {
		if st.conns[c.addr] == c {
			delete(st.conns, c.addr)
		}
		c.cancel()
		for ch, is := range st.issued {
			if is.conn == c {
				delete(st.issued, ch)
				r.lose(st, ch, is.sub)
			}
		}
	}
	for _, m := range mv {
		is, ok := st.issued[m.channel]
		if !ok || is.conn != m.conn {
			continue
		}
		delete(st.issued, m.channel)
		r.lose(st, m.channel, is.sub)
		if m.conn.count--; m.conn.count == 0 && st.conns[m.conn.addr] == m.conn {
			delete(st.conns, m.conn.addr)
			m.conn.close()
		}
	}
}

// lose detaches a channel from its connection and queues it for placing
// again, if it is still wanted.
func (r *Redis) lose(st *subState, ch string, s *groupSub) {
	r.mu.Lock()
	wanted := r.subs[ch] == s
	if wanted {
		s.conn, s.barrier, s.live = nil, 0, false
	}
	r.mu.Unlock()
	if wanted {
		st.retry[ch] = s.group
	}
}

// placeShards is the subscriber's work for a batch of channels in a
// cluster: each goes to the connection of the master that owns its slot,
// their floors are read in one pipeline, and each connection's new
// subscriptions (one SSUBSCRIBE per channel: a connection's channels may
// lie in different slots) are confirmed by one barrier. It returns the
// channels that could not be placed and must be tried again after a
// backoff.
func (r *Redis) placeShards(st *subState, batch []wanted) (retry []wanted) {
	type work struct {
		sub     []string
		confirm []*groupSub
	}
	var order []*psConn // the connections written to, in the batch's order
	byConn := make(map[*psConn]*work)
	var floors []*groupSub
	for _, w := range batch {
		have, issued := st.issued[w.ch]
		if issued && have.sub == w.want {
			continue
		}
		if w.want == nil {
			if issued {
				r.unplace(st, w, have.conn)
			}
			continue
		}
		c := have.conn
		if !issued {
			ctx, cancel := context.WithTimeout(r.ctx, redisOpTimeout)
			node, err := r.cc.MasterForKey(ctx, w.ch)
			cancel()
			if err != nil {
				r.log.Debug("channellayer: redis cluster: finding the shard", "group", w.group, "err", err)
				retry = append(retry, w)
				continue
			}
			addr := node.Options().Addr
			c = st.conns[addr]
			if c == nil {
				c = r.newShardConn(addr, node)
				st.conns[addr] = c
			}
			c.count++
		}
		st.issued[w.ch] = issue{sub: w.want, conn: c}
		r.mu.Lock()
		w.want.conn = c
		r.mu.Unlock()
		wk := byConn[c]
		if wk == nil {
			wk = &work{}
			byConn[c] = wk
			order = append(order, c)
		}
		if !issued {
			floors = append(floors, w.want)
			wk.sub = append(wk.sub, w.ch)
		}
		wk.confirm = append(wk.confirm, w.want)
	}
	r.readFloors(floors)
	for _, c := range order {
		wk := byConn[c]
		for _, ch := range wk.sub {
			if err := c.send(func(ctx context.Context) error { return c.ps.SSubscribe(ctx, ch) }); err != nil {
				if r.ctx.Err() == nil {
					r.log.Debug("channellayer: redis ssubscribe", "channel", ch, "addr", c.addr, "err", err)
					c.kill()
				}
				wk = nil // the connection's death places its channels again
				break
			}
		}
		if wk == nil {
			continue
		}
		if err := c.confirm(wk.confirm); err != nil && r.ctx.Err() == nil {
			r.log.Debug("channellayer: redis ping", "groups", len(wk.confirm), "addr", c.addr, "err", err)
			c.kill()
		}
	}
	return retry
}

// unplace takes a channel no longer wanted off its connection c, and
// closes c with its last channel.
func (r *Redis) unplace(st *subState, w wanted, c *psConn) {
	delete(st.issued, w.ch)
	c.count--
	r.mu.Lock()
	c.unsubs[w.ch]++
	r.mu.Unlock()
	if c.count == 0 {
		if st.conns[c.addr] == c {
			delete(st.conns, c.addr)
		}
		c.close()
		return
	}
	if err := c.send(func(ctx context.Context) error { return c.ps.SUnsubscribe(ctx, w.ch) }); err != nil && r.ctx.Err() == nil {
		r.log.Debug("channellayer: redis sunsubscribe", "group", w.group, "err", err)
		c.kill()
	}
}

// updateReady sets the readiness of a layer on a cluster: ready while its
// process channel and every channel it had confirmed are live. It reports
// whether the layer became ready.
func (r *Redis) updateReady(cause error) bool {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return false
	}
	ready := r.proc.live
	if ready {
		for _, s := range r.subs {
			if s.confirmed && !s.live {
				ready = false
				break
			}
		}
	}
	was := r.ready
	r.mu.Unlock()
	if ready == was {
		return false
	}
	if cause == nil {
		cause = errors.New("a shard's pub/sub connection is down")
	}
	r.setReady(ready, cause)
	return ready
}

// checkCluster asks every master whether the cluster is ok: a master
// answers PING even while the cluster refuses commands.
func (r *Redis) checkCluster(ctx context.Context) error {
	err := r.cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state is not ok", c.Options().Addr)
		}
		return nil
	})
	if err != nil {
		return r.fail(ctx, "ping", err)
	}
	return nil
}
