package channellayer

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// psConn is one pub/sub connection of the layer: the only one with one
// Redis, one per shard (master node) in a Redis Cluster.
//
// With one Redis, go-redis reconnects the connection and subscribes again
// to every channel by itself. A shard's connection is not repaired: when it
// fails, its receive loop reports it dead and the subscriber places its
// groups again, on whichever node owns their slot by then.
type psConn struct {
	r     *Redis
	addr  string // the shard's node; "" with one Redis
	shard bool
	ps    *redis.PubSub

	ctx    context.Context // cancelled when the layer or this shard connection closes
	cancel context.CancelFunc

	// Between the receive loop and health.
	receiving atomic.Bool  // the loop waits for messages (not resubscribing)
	lastRead  atomic.Int64 // when the loop last read something (Unix ns)
	silent    atomic.Value // errNoPong, once health broke the connection off

	// Guarded by Redis.mu.
	barrier uint64         // last barrier number handed out on this connection
	resync  uint64         // the barrier that makes the layer ready again (one Redis)
	unsubs  map[string]int // sunsubscribe replies still due to our own SUNSUBSCRIBE

	// Owned by the subscriber.
	count int // channels issued on this connection
}

// issue is what the subscriber asked Redis for on one pub/sub channel.
type issue struct {
	sub  *groupSub
	conn *psConn
}

// moved is a subscription that a shard dropped by itself (its slot moved).
type moved struct {
	conn    *psConn
	channel string
}

// Background work.

func (r *Redis) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// setReady records whether the layer is connected and wakes those waiting
// for a change.
func (r *Redis) setReady(ready bool, err error) {
	r.mu.Lock()
	if !r.closed && !ready && !r.ready && err != nil {
		// Still not ready (or never was, with NoWait): say why when the
		// reason changes, else every redisDownLog, so that a wrong
		// setting or a long outage does not go unseen.
		why, now := err.Error(), time.Now()
		if why != r.downErr || now.Sub(r.downLog) >= redisDownLog {
			r.downErr, r.downLog = why, now
			r.mu.Unlock()
			r.log.Warn("channellayer: redis still unavailable", "err", err)
			return
		}
	}
	if r.closed || r.ready == ready {
		r.mu.Unlock()
		return
	}
	if !ready && err != nil {
		r.downErr, r.downLog = err.Error(), time.Now()
	}
	r.ready = ready
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if ready {
		r.log.Info("channellayer: redis connected")
	} else {
		r.log.Warn("channellayer: redis connection lost", "err", err)
	}
}

func (r *Redis) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

// nextBarrier hands out a barrier number on c: the pong of the PING that
// carries it proves that every subscription written on c before it was
// confirmed.
func (c *psConn) nextBarrier(resync bool) uint64 {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	c.barrier++
	if resync {
		c.resync = c.barrier
	}
	return c.barrier
}

// send writes one command on the pub/sub connection under a deadline of
// its own. Never one that other calls used up before it: a write that
// fails makes go-redis replace the connection and subscribe the new one
// to every channel it knows in one command, which a Redis Cluster refuses
// (CROSSSLOT) unless they share a slot, and the connection dies.
func (c *psConn) send(write func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(c.ctx, redisOpTimeout)
	defer cancel()
	return write(ctx)
}

func (c *psConn) ping(n uint64) error {
	return c.send(func(ctx context.Context) error { return c.ps.Ping(ctx, barrierPrefix+strconv.FormatUint(n, 10)) })
}

const barrierPrefix = "barrier:"

// subscriber is the only goroutine that changes the pub/sub subscriptions:
// it brings them in line with r.subs, one group at a time, so that adds and
// discards of one group never overtake each other. In a cluster it also
// places again the groups of a shard connection that failed or of a slot
// that moved, with a backoff while that fails.
func (r *Redis) subscriber() {
	defer r.wg.Done()
	st := &subState{
		issued: make(map[string]issue),
		conns:  make(map[string]*psConn),
		retry:  make(map[string]string),
	}
	defer st.closeAll()
	backoff := redisBackoffMin
	var timer *time.Timer
	var timerC <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
		case <-timerC:
			timerC = nil
			r.mu.Lock()
			for ch, g := range st.retry {
				if _, ok := r.pending[ch]; !ok {
					r.pending[ch] = g
				}
			}
			r.mu.Unlock()
			clear(st.retry)
		}
		r.collectLost(st)
		for {
			batch := r.takePending(placeBatch)
			if len(batch) == 0 {
				break
			}
			if r.cluster {
				for _, w := range r.placeShards(st, batch) {
					st.retry[w.ch] = w.group
				}
			} else {
				r.place(st, batch)
			}
			if r.ctx.Err() != nil {
				return
			}
		}
		// Placing again backs off while it keeps failing, whether the
		// failure shows here or as the death of the connection.
		if len(st.retry) > 0 {
			if timerC == nil {
				if timer == nil {
					timer = time.NewTimer(backoff)
				} else {
					timer.Reset(backoff)
				}
				timerC = timer.C
				backoff = min(2*backoff, redisBackoffMax)
			}
		} else if r.isReady() {
			backoff = redisBackoffMin
		}
	}
}

// subState is the subscriber's own state.
type subState struct {
	issued map[string]issue   // by pub/sub channel
	conns  map[string]*psConn // shard connections by node address
	retry  map[string]string  // channel → group, to place again after the backoff
}

func (st *subState) closeAll() {
	for _, c := range st.conns {
		c.close()
	}
}

// wanted is a channel the subscriber brings in line with r.subs: want is
// the subscription wanted now (nil: none).
type wanted struct {
	ch, group string
	want      *groupSub
}

// placeBatch bounds the channels the subscriber places in one pass: their
// history floors are read in one pipeline, their subscriptions written
// together and confirmed by one barrier per connection, so that placing a
// shard's groups again after its connection died, or a node's rooms after
// a start, takes a few round trips rather than a few per group.
const placeBatch = 256

// takePending takes up to n channels of r.pending, each with the
// subscription wanted for it now.
func (r *Redis) takePending(n int) []wanted {
	r.mu.Lock()
	defer r.mu.Unlock()
	var batch []wanted
	for ch, group := range r.pending {
		if len(batch) == n {
			break
		}
		delete(r.pending, ch)
		batch = append(batch, wanted{ch: ch, group: group, want: r.subs[ch]})
	}
	return batch
}

// place is the subscriber's work for a batch of channels with one Redis:
// one UNSUBSCRIBE and one SUBSCRIBE for all of them (one Redis has no
// slots), then one barrier.
func (r *Redis) place(st *subState, batch []wanted) {
	c := r.single
	var unsub, sub []string
	var floors, confirm []*groupSub
	for _, w := range batch {
		have := st.issued[w.ch].sub
		if have == w.want {
			continue
		}
		if w.want == nil {
			delete(st.issued, w.ch)
			unsub = append(unsub, w.ch)
			continue
		}
		st.issued[w.ch] = issue{sub: w.want, conn: c}
		r.mu.Lock()
		w.want.conn = c
		r.mu.Unlock()
		if have == nil {
			floors = append(floors, w.want)
			sub = append(sub, w.ch)
		}
		confirm = append(confirm, w.want)
	}
	if len(unsub) > 0 {
		if err := c.send(func(ctx context.Context) error { return c.ps.Unsubscribe(ctx, unsub...) }); err != nil && r.ctx.Err() == nil {
			r.log.Debug("channellayer: redis unsubscribe", "channels", len(unsub), "err", err)
		}
	}
	r.readFloors(floors)
	if len(sub) > 0 {
		if err := c.send(func(ctx context.Context) error { return c.ps.Subscribe(ctx, sub...) }); err != nil && r.ctx.Err() == nil {
			// go-redis keeps the channels and subscribes again when it reconnects.
			r.log.Debug("channellayer: redis subscribe", "channels", len(sub), "err", err)
		}
	}
	if err := c.confirm(confirm); err != nil && r.ctx.Err() == nil {
		r.log.Debug("channellayer: redis ping", "groups", len(confirm), "err", err)
	}
}

// confirm asks for a pong behind everything written on c so far: it
// confirms subs (see pong).
func (c *psConn) confirm(subs []*groupSub) error {
	if len(subs) == 0 {
		return nil
	}
	n := c.nextBarrier(false)
	c.r.mu.Lock()
	for _, s := range subs {
		s.barrier = n
	}
	c.r.mu.Unlock()
	return c.ping(n)
}

// readFloors records, for each group not yet listened to, where its
// history stood before this process listened: gap repair starts there if
// no recorded message arrives before a reconnect. Only the first
// subscription of a group sets it. One pipeline (a round trip per shard)
// reads them all, under a deadline of its own.
func (r *Redis) readFloors(subs []*groupSub) {
	var need []*groupSub
	r.mu.Lock()
	for _, s := range subs {
		if !s.proc && !s.hasFloor {
			need = append(need, s)
		}
	}
	r.mu.Unlock()
	if len(need) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, redisOpTimeout)
	defer cancel()
	cmds := make([]*redis.XMessageSliceCmd, len(need))
	_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range need {
			cmds[i] = p.XRevRangeN(ctx, r.historyKey(s.group), "+", "-", 1)
		}
		return nil
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range need {
		xs, err := cmds[i].Result()
		if err != nil {
			continue
		}
		s.hasFloor = true
		if len(xs) > 0 {
			s.floor, _ = parseID(xs[0].ID)
		}
	}
}

// receiveLoop reads one pub/sub connection: it delivers messages, confirms
// subscriptions, notices lost connections and repairs the gaps they left.
// With one Redis it reconnects; a shard connection reports itself dead
// instead and ends.
//
// The loop's reads wait up to redisReceiveWait; a separate goroutine
// (health) pings the connection while nothing comes on it. A read
// deadline as short as the health period cut messages in the middle when
// a starved process read them slowly: the next read took the rest of the
// message for a reply ("can't parse") and the connection was lost.
func (c *psConn) receiveLoop() {
	r := c.r
	defer r.wg.Done()
	c.lastRead.Store(time.Now().UnixNano())
	ended := make(chan struct{})
	defer close(ended)
	r.wg.Add(1)
	go c.health(ended)
	backoff := redisBackoffMin
	resync := !c.shard
	c.receiving.Store(!resync)
	var gaps gapQueue
	for {
		if c.ctx.Err() != nil {
			return
		}
		if resync {
			// Connect (go-redis subscribes again to every channel it
			// knows), then ask for a pong behind the confirmations.
			n := c.nextBarrier(true)
			err := c.send(func(ctx context.Context) error { return c.ps.Subscribe(ctx, r.procChan) })
			if err == nil {
				err = c.ping(n)
			}
			if err != nil {
				r.setReady(false, err)
				if !r.sleep(&backoff) {
					return
				}
				continue
			}
			resync = false
			c.lastRead.Store(time.Now().UnixNano())
			c.receiving.Store(true)
		}
		msg, err := c.ps.ReceiveTimeout(c.ctx, redisReceiveWait)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.repairGaps(c, &gaps)
				continue // nothing came: health pings
			}
			gaps.take() // dropped: a shard connection dies and is placed again; one Redis resubscribes
			c.receiving.Store(false)
			if c.shard {
				if e, ok := c.silent.Load().(error); ok {
					err = e
				}
				c.die(err)
				return
			}
			r.setReady(false, err)
			resync = true
			if !r.sleep(&backoff) {
				return
			}
			continue
		}
		c.lastRead.Store(time.Now().UnixNano())
		switch m := msg.(type) {
		case *redis.Message:
			if gaps.has(m.Channel) {
				r.repairGaps(c, &gaps) // what was recorded before it first
			}
			r.handle(c, m)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				if g, ok := r.resubscribed(c, m.Channel); ok {
					gaps.add(m.Channel, g)
				}
			case "sunsubscribe":
				c.unsubscribed(m.Channel)
			}
		case *redis.Pong:
			// A barrier confirms what it covers once their gaps are
			// repaired.
			r.repairGaps(c, &gaps)
			if c.pong(m.Payload) {
				backoff = redisBackoffMin
			}
		}
	}
}

// health pings the connection when nothing came on it for redisHealth. With
// no answer for three periods more, the layer is not ready (one Redis) or
// the shard connection is broken off, which its receive loop reports dead.
// It ends with the loop (ended).
func (c *psConn) health(ended <-chan struct{}) {
	r := c.r
	defer r.wg.Done()
	t := time.NewTicker(redisHealth)
	defer t.Stop()
	var pingSent time.Time // an unanswered health ping
	for {
		select {
		case <-ended:
			return
		case now := <-t.C:
			if !c.receiving.Load() {
				pingSent = time.Time{} // resubscribing: that checks the connection
				continue
			}
			last := time.Unix(0, c.lastRead.Load())
			if last.After(pingSent) {
				pingSent = time.Time{} // answered, or something else came
			}
			switch {
			case now.Sub(last) < redisHealth:
			case pingSent.IsZero():
				pingSent = now
				_ = c.send(func(ctx context.Context) error { return c.ps.Ping(ctx, "health") })
			case now.Sub(pingSent) > 3*redisHealth:
				if c.shard {
					c.silent.Store(errNoPong)
					c.kill()
					return
				}
				r.setReady(false, errNoPong)
			}
		}
	}
}

var errNoPong = errors.New("no answer to ping")

// sleep waits for the backoff, doubling it up to its cap; false if the layer
// is closing.
func (r *Redis) sleep(backoff *time.Duration) bool {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(2**backoff, redisBackoffMax)
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}

// pong confirms the subscriptions a barrier covers; with one Redis the
// resync barrier makes the layer ready. It reports whether the layer became
// ready.
func (c *psConn) pong(payload string) bool {
	r := c.r
	s, ok := strings.CutPrefix(payload, barrierPrefix)
	if !ok {
		if c.shard {
			return false
		}
		r.mu.Lock()
		ready := r.ready
		r.mu.Unlock()
		if !ready { // a late health pong after a "no answer": the connection lives
			r.setReady(true, nil)
		}
		return false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return false
	}
	r.mu.Lock()
	for _, sub := range r.subs {
		if sub.conn != c || sub.barrier == 0 || sub.barrier > n {
			continue
		}
		if !sub.confirmed {
			sub.confirmed = true
			close(sub.ready)
		}
		sub.live = true
	}
	becomesReady := !c.shard && !r.ready && n >= c.resync
	r.mu.Unlock()
	if c.shard {
		return r.updateReady(nil)
	}
	if becomesReady {
		r.setReady(true, nil)
	}
	return becomesReady
}

// gapRepair is a group whose subscription was confirmed again: what it
// recorded after from is delivered from history before its next live
// message.
type gapRepair struct {
	s    *groupSub
	from streamID
}

// gapQueue holds the gap repairs a receive loop has not run yet: they are
// run together, in one pipeline, when the loop reads a pong (a barrier
// then confirms groups whose gaps are repaired), a message of one of their
// groups, or nothing for a while. A connection replaced or placed again
// confirms many groups in a row; repaired one at a time, each a round
// trip while the loop read nothing else, a shard with a thousand groups
// kept the layer not ready for tens of seconds on a loaded machine.
// Owned by the receive loop.
type gapQueue struct {
	list []gapRepair
	chs  map[string]struct{}
}

func (q *gapQueue) add(ch string, g gapRepair) {
	if q.chs == nil {
		q.chs = make(map[string]struct{})
	}
	q.chs[ch] = struct{}{}
	q.list = append(q.list, g)
}

// has reports whether ch waits for a repair: asked of every message read,
// so an empty queue answers without hashing ch.
func (q *gapQueue) has(ch string) bool {
	if len(q.list) == 0 {
		return false
	}
	_, ok := q.chs[ch]
	return ok
}

// take empties the queue and returns what it held. The map goes with it:
// repairs come in rare bursts, and a map kept between them would be
// cleared, bucket by bucket, at every pong.
func (q *gapQueue) take() []gapRepair {
	list := q.list
	q.list, q.chs = nil, nil
	return list
}

// resubscribed handles a subscription confirmed by Redis. For a group whose
// subscription was already confirmed, it means the connection was replaced
// (or, in a cluster, the group moved to another shard): it returns the gap
// to repair from history, what the group recorded meanwhile.
func (r *Redis) resubscribed(c *psConn, ch string) (gapRepair, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.subs[ch]
	if s == nil || !s.confirmed || s.proc || (c.shard && s.conn != c) {
		return gapRepair{}, false
	}
	from, ok := s.last, s.hasLast
	if !ok {
		from, ok = s.floor, s.hasFloor
	}
	return gapRepair{s: s, from: from}, ok
}

// repairBatch bounds the history reads of one pipeline of gap repairs.
const repairBatch = 256

// repairGaps runs the gap repairs q holds: it delivers what each group
// recorded after its from, before any later live message of the group.
func (r *Redis) repairGaps(c *psConn, q *gapQueue) {
	list := q.take()
	for start := 0; start < len(list); start += repairBatch {
		chunk := list[start:min(len(list), start+repairBatch)]
		got, err := r.readGaps(c, chunk)
		for i, g := range chunk {
			if got[i] == nil {
				continue // its read failed
			}
			r.deliverGap(g, got[i])
		}
		if err == nil {
			continue
		}
		if c.shard && c.ctx.Err() == nil {
			// The shard answers but its history does not (a cluster that
			// is not ok yet): place its groups again later, repair then.
			r.log.Debug("channellayer: redis history after a move", "addr", c.addr, "err", err)
			c.kill()
			return
		}
		if c.ctx.Err() == nil {
			r.log.Warn("channellayer: redis history after reconnect, messages may be missing", "err", err)
		}
	}
}

// deliverGap delivers the messages of one gap that were not delivered yet.
func (r *Redis) deliverGap(g gapRepair, xs []redis.XMessage) {
	delivered := 0
	for _, x := range xs {
		if m, ok := streamMessage(x); ok && r.deliverRecorded(g.s, m) {
			delivered++
		}
	}
	if len(xs) > 0 {
		r.log.Debug("channellayer: redis gap repaired", "group", g.s.group, "after", g.from.String(),
			"read", len(xs), "delivered", delivered, "first", xs[0].ID, "last", xs[len(xs)-1].ID)
	} else {
		r.log.Debug("channellayer: redis gap repair found nothing", "group", g.s.group, "after", g.from.String())
	}
}

// readGaps reads what each group of gaps recorded after its from, in one
// pipeline (a round trip per shard): got[i] is the i-th gap's messages,
// nil for one that failed. A freshly restarted Redis may still be loading,
// and a loaded machine may time out: with one Redis it retries the reads
// that failed for a while rather than give up the repair, holding back the
// live messages behind it (they are read after it, so order and
// deduplication hold). A shard's failure is returned at once.
func (r *Redis) readGaps(c *psConn, gaps []gapRepair) (got [][]redis.XMessage, err error) {
	got = make([][]redis.XMessage, len(gaps))
	todo := make([]int, len(gaps))
	for i := range todo {
		todo[i] = i
	}
	wait := 50 * time.Millisecond
	deadline := time.Now().Add(15 * time.Second)
	for {
		// A batch's deadline, not one read's: a loaded Redis that answers
		// a few hundred reads late has still answered them, and a shard
		// whose repair failed would be placed again and read it all again.
		ctx, cancel := context.WithTimeout(c.ctx, redisBatchTimeout)
		cmds := make([]*redis.XMessageSliceCmd, len(todo))
		_, _ = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, i := range todo {
				cmds[k] = p.XRange(ctx, r.historyKey(gaps[i].s.group), "("+gaps[i].from.String(), "+")
			}
			return nil
		})
		cancel()
		failed := todo[:0]
		err = nil
		for k, i := range todo {
			xs, cerr := cmds[k].Result()
			if cerr != nil {
				failed, err = append(failed, i), cerr
				continue
			}
			if xs == nil {
				xs = []redis.XMessage{}
			}
			got[i] = xs
		}
		todo = failed
		if err == nil || c.ctx.Err() != nil || c.shard || time.Now().After(deadline) {
			return got, err
		}
		r.log.Debug("channellayer: redis history after reconnect, retrying", "groups", len(todo), "err", err)
		select {
		case <-c.ctx.Done():
			return got, c.ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// handle delivers one published message.
func (r *Redis) handle(c *psConn, pm *redis.Message) {
	if pm.Channel == r.procChan {
		target, m, _, ok := parseEnvelope(pm.Payload)
		if !ok || target == "" {
			return
		}
		if err := r.local.send(target, m); err != nil {
			r.log.Debug("channellayer: redis directed send dropped", "channel", target, "err", err)
		}
		return
	}
	r.mu.Lock()
	s := r.subs[pm.Channel]
	elsewhere := s != nil && c.shard && s.conn != c
	r.mu.Unlock()
	if s == nil || elsewhere {
		return // no local member left, or the group lives on another connection now
	}
	if strings.HasPrefix(pm.Payload, recordedMark) {
		if !parseRecorded(pm.Payload, func(m Message) { r.deliverRecorded(s, m) }) {
			r.log.Warn("channellayer: redis recorded message malformed, rest dropped", "group", s.group)
		}
		return
	}
	except, m, recorded, ok := parseEnvelope(pm.Payload)
	if !ok {
		return
	}
	if !recorded {
		r.local.deliverExcept(s.group, m, except)
		return
	}
	r.deliverRecorded(s, m)
}

// deliverRecorded delivers a recorded message unless it was delivered
// already (live after a gap repair, or the other way round), and reports
// whether it did.
func (r *Redis) deliverRecorded(s *groupSub, m Message) bool {
	id, ok := parseID(m.ID)
	if !ok {
		return false
	}
	if s.hasLast && !s.last.less(id) {
		return false
	}
	s.last, s.hasLast = id, true
	r.deliverLocal(s.group, m)
	return true
}
