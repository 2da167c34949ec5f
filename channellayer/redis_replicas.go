package channellayer

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Records confirmed by replicas (RedisOptions.Replicas).
//
// Redis replicates asynchronously: a message the primary has recorded and
// published can be lost if the primary dies before a replica has it, and
// the replica is promoted. With Replicas set, the record script keeps the
// batch's pub/sub message instead of publishing it; the round trip that
// carried the records ends with one WAIT for the replicas; and only once
// they confirm is the batch published, in a second round trip, before the
// pipeline's next batch goes (so records keep their order). A sender's
// copy of its message is its acknowledgement: it now comes only once the
// replicas have the message.

// hold returns b if its publish must wait for replicas, else nil.
func (p *pipeline) hold(b *recordBatch) *recordBatch {
	if p.replicas > 0 && b.err == nil {
		return b
	}
	return nil
}

// doRecord runs a waited record on the pipeline (see do).
func (p *pipeline) doRecord(ctx context.Context, b *recordBatch) (redis.Cmder, error) {
	return p.doCall(ctx, &pipeCall{queue: b.queue, done: make(chan struct{}), held: p.hold(b)})
}

// heldAlone sends one held record in a round trip of its own, with its
// WAIT, and settles it.
func (p *pipeline) heldAlone(ctx context.Context, call *pipeCall) redis.Cmder {
	pipe := p.client.Pipeline()
	call.cmd = call.queue(ctx, pipe)
	wait := p.queueWait(ctx, pipe)
	_, _ = pipe.Exec(ctx)
	p.settleHeld(ctx, []*pipeCall{call}, wait)
	return call.cmd
}

// settleHeld decides the held records of a batch that has been sent,
// wait being the WAIT that followed them, and publishes those the
// replicas confirmed, in one round trip. Each record's outcome is kept in
// its recordBatch for result.
func (p *pipeline) settleHeld(ctx context.Context, batch []*pipeCall, wait *redis.Cmd) {
	pipe := p.client.Pipeline()
	var pubs []*recordBatch
	for _, c := range batch {
		b := c.held
		if b == nil || c.cmd == nil {
			continue
		}
		b.settled = true
		cmd, w := c.cmd, wait
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// Redis lost its scripts (a restart, a promoted replica):
			// send it whole, with a WAIT of its own.
			retry := p.client.Pipeline()
			cmd = recordScript.Eval(ctx, retry, b.keys, b.args...)
			w = p.queueWait(ctx, retry)
			_, _ = retry.Exec(ctx)
		}
		ids, err := cmd.(*redis.Cmd).StringSlice()
		if err == nil && len(ids) != len(b.msgs)+1 {
			err = fmt.Errorf("record script answered %d values for %d messages and their pub/sub message", len(ids), len(b.msgs))
		}
		if err != nil {
			b.heldErr = b.r.fail(ctx, "recorded group send", err)
			continue
		}
		if n, err := w.Int64(); err != nil {
			b.heldErr = b.r.fail(ctx, "recorded group send: waiting for replicas", err)
			continue
		} else if n < int64(p.replicas) {
			b.heldErr = fmt.Errorf("channellayer: redis recorded group send: %d of %d replicas confirmed within %v: %w",
				n, p.replicas, p.replicaWait, ErrUnavailable)
			continue
		}
		b.ids = ids[:len(b.msgs)]
		b.r.publishTo(ctx, pipe, b.channel, ids[len(b.msgs)])
		pubs = append(pubs, b)
	}
	if len(pubs) == 0 {
		return
	}
	cmds, _ := pipe.Exec(ctx)
	for i, b := range pubs {
		if i < len(cmds) && cmds[i].Err() != nil {
			// Recorded and replicated, but not delivered live: the
			// sender is told, and who resumes from history gets it.
			b.heldErr = b.r.fail(ctx, "recorded group send: publishing", cmds[i].Err())
		}
	}
}

// queueWait queues a WAIT for the replicas on pipe (WAIT counts the
// replicas that have every write of its connection: the pipeline's).
func (p *pipeline) queueWait(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	return pipe.Do(ctx, "WAIT", p.replicas, p.replicaWait.Milliseconds())
}

// publishTo queues the publish of payload on c.
func (r *Redis) publishTo(ctx context.Context, c redis.Cmdable, channel, payload string) {
	if r.cluster {
		c.SPublish(ctx, channel, payload)
	} else {
		c.Publish(ctx, channel, payload)
	}
}
