package channellayer

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// pipeline sends the publishes of concurrent callers together. A command
// that finds no round trip to Redis under way is sent at once, alone: a
// lone publish waits for nothing. Commands that come while one is under
// way wait for it, then go together in one pipeline (one write and one
// read for the lot), and so on: a busy node makes one round trip per
// batch, not one per message, and Redis reads a batch in one go.
//
// Each caller still gets its own command's result. A caller whose context
// ends while its command waits takes it back: it is never sent. One sent
// is as uncertain as any network call cut short.
type pipeline struct {
	client redis.UniversalClient
	ctx    context.Context // the layer's: ends batches at Close

	mu     sync.Mutex
	busy   bool           // a round trip is under way
	queue  []*pipeCall    // waiting for the next batch
	spare  []*pipeCall    // the array of the batch before, for reuse
	wg     sync.WaitGroup // batches under way on their own goroutine
	closed bool
}

// pipeCall is one caller's command, waiting for a batch.
type pipeCall struct {
	queue func(ctx context.Context, c redis.Cmdable) redis.Cmder
	cmd   redis.Cmder   // set when the batch is built; nil if the layer closed first
	done  chan struct{} // closed when cmd has its result
	taken bool          // a batch took it (under mu)
	gone  bool          // the caller gave up before a batch took it (under mu)
}

// do runs one command: add issues it on c and returns it. It returns the
// command with its result, or the context's error if ctx ended first.
func (p *pipeline) do(ctx context.Context, add func(ctx context.Context, c redis.Cmdable) redis.Cmder) (redis.Cmder, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if !p.busy {
		p.busy = true
		p.mu.Unlock()
		cmd := add(ctx, p.client)
		p.next()
		return cmd, nil
	}
	call := &pipeCall{queue: add, done: make(chan struct{})}
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

// next starts a batch of what waits, on its own goroutine so that the
// caller that ended a round trip returns, or marks the pipeline idle.
func (p *pipeline) next() {
	p.mu.Lock()
	defer p.mu.Unlock()
	batch := p.queue[:0]
	for _, c := range p.queue {
		if !c.gone {
			batch = append(batch, c)
		}
	}
	for _, c := range batch {
		c.taken = true
	}
	if len(batch) == 0 || p.closed {
		for _, c := range batch {
			close(c.done) // no command: ErrClosed
		}
		p.busy = false
		clear(p.queue)
		p.queue = p.queue[:0]
		return
	}
	p.queue = p.spare[:0]
	p.spare = nil
	pipe := p.client.Pipeline()
	ctx, cancel := context.WithTimeout(p.ctx, redisOpTimeout)
	for _, c := range batch {
		c.cmd = c.queue(ctx, pipe)
	}
	p.wg.Add(1) // under mu, before closed is set: close waits for it
	go p.send(ctx, cancel, pipe, batch)
}

func (p *pipeline) send(ctx context.Context, cancel context.CancelFunc, pipe redis.Pipeliner, batch []*pipeCall) {
	defer p.wg.Done()
	_, _ = pipe.Exec(ctx) // each command carries its own error
	cancel()
	for _, c := range batch {
		close(c.done)
	}
	clear(batch)
	p.mu.Lock()
	if p.spare == nil && cap(batch) <= 1024 {
		p.spare = batch[:0]
	}
	p.mu.Unlock()
	p.next()
}

// close refuses new commands and waits for the batches under way (the
// layer's context, cancelled first, cuts them short).
func (p *pipeline) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
}
