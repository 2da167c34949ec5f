package channellayer

import (
	"context"
	"maps"
	"runtime"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/internal/stack"
	"github.com/redis/go-redis/v9"
)

// pipeline sends the publishes of concurrent callers together. A command
// that finds no round trip to Redis under way is sent at once, alone: a
// lone publish waits for nothing. Commands that come while one is under
// way wait for it, then go together in one pipeline (one write and one
// read for the lot), and so on: a busy node makes one round trip per
// batch, not one per message, and Redis reads a batch in one go.
//
// Records that do not wait for their result (asyncRecord) batch the same
// way, and records of one group queued one behind the other share a
// script call: a node recording a steady stream of messages makes one
// round trip, and Redis one write to each subscriber, per round trip's
// worth of messages. No timer holds them by default. With a linger
// (RedisOptions.RecordLinger), while the pipeline has been busy lately (a
// round trip began less than pipeBusy ago), the first of them waits that
// long for others before its batch goes, unless pipeFull commands gather
// first or a record batch fills up (see recordBatch.full): fewer, bigger
// round trips for a little latency.
//
// A pipeline has a second round trip for unwaited records (see trip):
// while one is under way, records of the groups it does not carry go at
// once in the other.
//
// Each caller still gets its own command's result, in the order the
// commands came (records: in the order of their group's). A caller whose
// context ends while its command waits takes it back: it is never sent.
// One sent is as uncertain as any network call cut short. A batch is
// bounded by redisBatchTimeout and by Close.
//
// In a Redis Cluster each master has its own pipeline (see pipelines): a
// slow or failing shard holds up only the commands it owns, and the
// commands of all the groups a shard owns share its round trips.
type pipeline struct {
	client redis.UniversalClient
	ctx    context.Context // the layer's: ends batches at Close
	wg     *sync.WaitGroup // round trips under way, for Close
	// With replicas > 0 a round trip that records ends with one WAIT for
	// them (at most replicaWait), and its records are published after it
	// (see settleHeld).
	replicas    int
	replicaWait time.Duration
	linger      time.Duration // RedisOptions.RecordLinger; 0: none

	mu        sync.Mutex
	trips     [2]trip     // trips[1] only without a linger or replicas (see trip)
	lingering bool        // trips[0]'s next batch waits for timer
	timer     *time.Timer // the linger timer, made on first use
	lastStart time.Time   // when the last round trip began
	queue     []*pipeCall // waiting for the next batch
	closed    bool
}

// trip is one of a pipeline's two round trips. A batch takes what waits
// when one of them is free, except what must not pass the other's
// commands: while one is under way, the other carries only unwaited
// records of other groups than its records' (each group's records keep
// their order), and nothing while it carries anything else. So a record
// that comes while a round trip is under way, to a group that is not in
// it, goes at once on the second, instead of waiting for the first one's
// answer (many rooms: at p90 the wait was most of a record's time).
type trip struct {
	busy  bool            // under way (trips[0]: or a batch lingers)
	only  bool            // it carries only unwaited records: calls says which
	calls []*pipeCall     // its batch, while under way
	spare []*pipeCall     // the array of its batch before, for reuse
	pipe  redis.Pipeliner // its batches', made on first use
}

const (
	pipeBusy = 20 * time.Millisecond // a round trip that began this recently makes it busy
	pipeFull = 64                    // commands that send a lingering batch at once
	// pipeScan bounds the other round trip's calls a batch compares its
	// records' groups with, and the queue a second round trip scans: beyond
	// it a batch waits for the round trip under way.
	pipeScan = 64
)

// pipeCall is one caller's command, waiting for a batch.
type pipeCall struct {
	queue func(ctx context.Context, c redis.Cmdable) redis.Cmder
	cmd   redis.Cmder              // set when the batch is built; nil if the layer closed first
	done  chan struct{}            // a waiting caller's: closed when cmd has its result
	then  func(redis.Cmder, error) // an async caller's: called with the result instead
	// An unwaited record, which may take in the next one: it issues and
	// gets its result itself (queue and then are nil; the call is the
	// batch's own, so a record costs no allocation of its own here).
	batch *recordBatch
	held  *recordBatch // a record published only once replicas have it (waited or not)
	taken bool         // a batch took it (under mu)
	gone  bool         // the caller gave up before a batch took it (under mu)
}

// issue queues the call's command on c.
func (c *pipeCall) issue(ctx context.Context, cmds redis.Cmdable) redis.Cmder {
	if c.batch != nil {
		return c.batch.queue(ctx, cmds)
	}
	return c.queue(ctx, cmds)
}

// finish hands a call its result: cmd, or ErrClosed if it has none.
func (c *pipeCall) finish() {
	switch {
	case c.batch != nil && c.cmd == nil:
		c.batch.finish(nil, ErrClosed)
	case c.batch != nil:
		c.batch.finish(c.cmd, nil)
	case c.then == nil:
		close(c.done)
	case c.cmd == nil:
		c.then(nil, ErrClosed)
	default:
		c.then(c.cmd, nil)
	}
}

// record reports whether c is an unwaited record that may pass the
// commands of other groups.
func (c *pipeCall) record() bool { return c.batch != nil && c.held == nil }

// passes reports whether c may go while t is under way.
func (c *pipeCall) passes(t *trip) bool {
	if !t.busy {
		return true
	}
	if !t.only || !c.record() || len(t.calls) > pipeScan {
		return false
	}
	for _, o := range t.calls {
		if o.batch.group == c.batch.group {
			return false
		}
	}
	return true
}

// do runs one command: add issues it on c and returns it. It returns the
// command with its result, the context's error if ctx ended while the
// command waited, or ErrClosed once the layer is closing.
func (p *pipeline) do(ctx context.Context, add func(ctx context.Context, c redis.Cmdable) redis.Cmder) (redis.Cmder, error) {
	return p.doCall(ctx, &pipeCall{queue: add, done: make(chan struct{})})
}

// doCall is do with the call made.
func (p *pipeline) doCall(ctx context.Context, call *pipeCall) (redis.Cmder, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if !p.trips[0].busy && !p.trips[1].busy {
		t := &p.trips[0]
		t.busy, t.only = true, false
		p.lastStart = time.Now()
		p.wg.Add(1) // under mu, while not closed: Close waits for it
		p.mu.Unlock()
		defer p.wg.Done()
		defer p.next(0) // even if add panics: the queue must move on
		if call.held != nil {
			return p.heldAlone(ctx, call), nil
		}
		return call.issue(ctx, p.client), nil
	}
	p.queue = append(p.queue, call)
	p.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		p.mu.Lock()
		taken := call.taken
		call.gone = !taken
		p.mu.Unlock()
		if !taken {
			return nil, ctx.Err()
		}
		<-call.done // under way: its result decides
	}
	if call.cmd == nil {
		return nil, ErrClosed
	}
	return call.cmd, nil
}

// asyncRecord queues an unwaited record: b.finish gets its result, in the
// order the records of its group came, on a pipeline goroutine (or at
// once, if it fails with nothing ahead of it). A record queued right
// behind an unsent one of the same group merges into it (see
// recordBatch.merge), so that one script call records both.
func (p *pipeline) asyncRecord(b *recordBatch) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		b.finish(nil, ErrClosed)
		return
	}
	if b.err != nil { // it only fails: after the records ahead of it, if any
		if p.trips[0].busy || p.trips[1].busy {
			p.queue = append(p.queue, &pipeCall{queue: b.queue, then: b.finish})
			p.mu.Unlock()
		} else {
			p.mu.Unlock()
			b.finish(nil, nil)
		}
		return
	}
	var full bool
	if n := len(p.queue); n > 0 && p.queue[n-1].batch != nil && p.queue[n-1].batch.merge(b) {
		full = p.queue[n-1].batch.full()
	} else {
		b.call = pipeCall{batch: b, held: p.hold(b)}
		p.queue = append(p.queue, &b.call)
		full = len(p.queue) >= pipeFull
	}
	i := p.free()
	if i < 0 {
		full = full && p.lingering && p.timer.Stop()
		if full {
			p.lingering = false
		}
		p.mu.Unlock()
		if full {
			p.sendHeld(0)
		}
		return
	}
	p.trips[i].busy = true
	p.wg.Add(1) // under mu, while not closed: Close waits for the batch
	if i == 0 && p.linger > 0 && time.Since(p.lastStart) < pipeBusy {
		p.lingering = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.linger, p.lingered)
		} else {
			p.timer.Reset(p.linger)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.sendHeld(i)
}

// free returns a round trip that is not under way and may start, or -1.
// With a linger or replicas a pipeline has one. The second starts only
// where a record may pass the first: the first carries only records, and
// neither it nor the queue is so long that comparing groups costs more
// than the wait (a stalled Redis piles up records that none may pass; each
// new one would compare them all).
func (p *pipeline) free() int {
	first := &p.trips[0]
	switch {
	case !first.busy:
		return 0
	case !p.trips[1].busy && p.linger == 0 && p.replicas == 0 &&
		first.only && len(first.calls) <= pipeScan && len(p.queue) <= pipeScan:
		return 1
	}
	return -1
}

// lingered is the linger timer's: the batch waited long enough.
func (p *pipeline) lingered() {
	p.mu.Lock()
	p.lingering = false
	p.mu.Unlock()
	p.sendHeld(0)
}

// sendHeld starts a batch on round trip i, which asyncRecord made busy,
// and ends the hold asyncRecord took on Close.
func (p *pipeline) sendHeld(i int) {
	defer p.wg.Done()
	p.next(i)
}

// next starts a batch on round trip i of what waits and may pass the
// other round trip, on its own goroutine so that the caller that ended a
// round trip returns; or it marks round trip i idle.
func (p *pipeline) next(i int) {
	p.mu.Lock()
	t, other := &p.trips[i], &p.trips[1-i]
	t.calls, t.only = nil, true
	batch, rest := t.spare[:0], p.queue[:0]
	for j, c := range p.queue {
		switch {
		case c.gone:
			continue
		case p.closed || c.passes(other):
			c.taken = true
			batch = append(batch, c)
			t.only = t.only && c.record()
			continue
		case !c.record():
			// It keeps its place, and nothing behind it passes it.
			rest = append(rest, p.queue[j:]...)
		default:
			rest = append(rest, c) // it waits for its group's records
			continue
		}
		break
	}
	clear(p.queue[len(rest):]) // the array keeps no abandoned message
	p.queue = rest
	if len(batch) == 0 || p.closed {
		t.busy = false
		if len(batch) > 0 {
			t.spare = nil // closed: the calls below end with ErrClosed, outside mu
		}
		p.mu.Unlock()
		for _, c := range batch {
			c.finish() // closed, no command: ErrClosed
		}
		return
	}
	p.lastStart = time.Now()
	if t.pipe == nil {
		t.pipe = p.client.Pipeline()
	}
	pipe := t.pipe
	ctx := &batchCtx{Context: p.ctx, deadline: p.lastStart.Add(redisBatchTimeout)}
	holds := false
	for _, c := range batch {
		c.cmd = c.issue(ctx, pipe)
		holds = holds || c.held != nil && c.cmd != nil
	}
	var wait *redis.Cmd // after every record of the batch
	if holds {
		wait = p.queueWait(ctx, pipe)
	}
	t.calls = batch
	p.wg.Add(1) // under mu, while not closed: Close waits for it
	p.mu.Unlock()
	go p.send(ctx, i, pipe, batch, wait)
}

func (p *pipeline) send(ctx context.Context, i int, pipe redis.Pipeliner, batch []*pipeCall, wait *redis.Cmd) {
	defer p.wg.Done()
	// The round trip's goroutine starts with the runtime's smallest stack,
	// which go-redis's calls outgrew deep down, at the socket read: copying
	// the stack there was 12 % of the CPU profile of
	// BenchmarkRecordedAsync/redis, 0.6 % with it grown first.
	stack.Grow16K()
	_, _ = pipe.Exec(ctx) // each command carries its own error; Exec empties pipe for the next batch
	// The answer and the records' pub/sub messages come from Redis
	// together. Let the pub/sub reader, ready by now, deliver to the local
	// members before this goroutine hands out the answers: otherwise the
	// callers' done functions, and the goroutines they wake (in the chat,
	// a sender's reader, which goes on to its next frame), come first on
	// this processor, and every member waits for them (many rooms on
	// Redis, ABAB over 12 runs: p99 ratio to centrifuge 1.30 and 1.14
	// without, 1.03 and 1.09 with).
	runtime.Gosched()
	if wait != nil {
		p.settleHeld(ctx, batch, wait)
	}
	for _, c := range batch {
		c.finish()
	}
	p.mu.Lock()
	t := &p.trips[i]
	t.calls = nil
	clear(batch)
	if cap(batch) <= 1024 {
		t.spare = batch[:0]
	}
	p.mu.Unlock()
	p.next(i)
}

// batchCtx is a batch's context: the layer's (which ends at Close), with
// a deadline redisBatchTimeout after the batch began. The client sets its
// socket deadlines from it (ContextTimeoutEnabled, see NewRedis), so the
// round trip is bounded as with context.WithTimeout; but Done closes only
// at Close, not at the deadline, and so the context needs no timer: a
// timer and a cancel context for every round trip were a tenth of a
// record's allocations.
type batchCtx struct {
	context.Context
	deadline time.Time
}

func (c *batchCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *batchCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// pipelines are the publish pipelines of a layer: one for a single Redis;
// in a cluster one per master, made on first use.
//
// A pipeline per hash slot, as the layer had first, made every command a
// round trip of its own: a node's rooms are spread over the slots, so two
// commands rarely met in one, and a reconnect storm's joins each took two
// round trips and a pool connection where one Redis took them in batches.
type pipelines struct {
	client redis.UniversalClient
	cc     *redis.ClusterClient // nil with one Redis
	ctx    context.Context
	wg     sync.WaitGroup // round trips under way

	replicas    int           // see pipeline
	replicaWait time.Duration // see pipeline
	linger      time.Duration // see pipeline

	mu      sync.Mutex
	one     *pipeline            // one Redis; in a cluster, keys whose master is not known yet
	byShard map[string]*pipeline // in a cluster: by the master's address
	closed  bool
}

func newPipelines(ctx context.Context, client redis.UniversalClient, replicas int, replicaWait, linger time.Duration) *pipelines {
	ps := &pipelines{client: client, ctx: ctx, replicas: replicas, replicaWait: replicaWait, linger: linger, byShard: make(map[string]*pipeline)}
	ps.cc, _ = client.(*redis.ClusterClient)
	ps.one = ps.make()
	return ps
}

// noWait is a context that has ended: with it, pipelines.of never waits
// for a cluster's slots to load (it takes the pipeline of keys whose
// master is not known yet).
var noWait = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (ps *pipelines) make() *pipeline {
	return &pipeline{client: ps.client, ctx: ps.ctx, wg: &ps.wg, closed: ps.closed, replicas: ps.replicas, replicaWait: ps.replicaWait, linger: ps.linger}
}

// of returns the pipeline for commands on key (a channel or a key with a
// hash tag): in a cluster, that of the master that owns key's slot as the
// client knows the cluster (it loads the cluster's slots first, within
// ctx, if it knows none yet). A batch is sent through the cluster client,
// which routes each command by its slot: a slot that moved meanwhile costs
// a redirect, not a wrong answer.
func (ps *pipelines) of(ctx context.Context, key string) *pipeline {
	if ps.cc == nil {
		return ps.one
	}
	master, err := ps.cc.MasterForKey(ctx, key)
	if err != nil {
		return ps.one // the cluster client finds the slot's master itself
	}
	addr := master.Options().Addr
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.byShard[addr]
	if p == nil {
		p = ps.make()
		ps.byShard[addr] = p
	}
	return p
}

// closing refuses new commands: call it before the layer's context is
// cancelled, so that nothing starts on a cancelled context.
func (ps *pipelines) closing() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	ps.one.markClosed()
	for p := range maps.Values(ps.byShard) {
		p.markClosed()
	}
}

func (p *pipeline) markClosed() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// wait waits for the round trips under way.
func (ps *pipelines) wait() { ps.wg.Wait() }
