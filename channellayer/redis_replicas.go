package channellayer

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Records confirmed by replicas (RedisOptions.Replicas).
//
// Redis replicates asynchronously: a message the primary has recorded can
// be lost if the primary dies before a replica has it and the replica is
// promoted. With Replicas set, the round trip that carries a batch of
// records ends with one WAIT for the replicas, and the batch succeeds only
// if they confirm it.
//
// The record script still publishes each batch atomically with its
// recording, so every process receives recorded messages in ID order. But
// a sender's own copy of its message is its acknowledgement, and the
// sender is local: on the process that records, local delivery of the
// group's recorded messages is held from the moment a batch is sent until
// its WAIT is answered (holdGroup, releaseGroup). Then what was held is
// delivered in order, except the batch's own messages if the replicas did
// not confirm them: members here never see those (their senders are
// answered ErrUnavailable), while other processes' members may have (see
// RedisOptions.Replicas).
//
// A keyed record (GroupSendRecordedOnce) takes the same path. One whose
// key's message was recorded before publishes nothing, but its script
// writes the key again, so that its WAIT covers that message as well: a
// message whose first record was refused for want of replicas is
// acknowledged to a sender that sends it again only once they have it.

// hold is the local delivery of one group's recorded messages, held while
// batches of the group wait for replicas.
type hold struct {
	n     int                 // batches of the group waiting for replicas
	queue []Message           // recorded messages that came meanwhile, in order
	drop  map[string]struct{} // IDs of unconfirmed records not seen yet: never delivered here
}

// maxDrop bounds a group's IDs of unconfirmed records not seen yet (their
// pub/sub message may never come).
const maxDrop = 1024

// holdGroup holds the local delivery of group's recorded messages until
// releaseGroup: a batch of the group is about to be sent.
func (r *Redis) holdGroup(group string) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	h := r.holds[group]
	if h == nil {
		h = &hold{}
		r.holds[group] = h
	}
	h.n++
}

// releaseGroup ends one holdGroup: failed are the IDs of the batch if the
// replicas did not confirm it. Once no batch of the group waits, what was
// held is delivered.
func (r *Redis) releaseGroup(group string, failed []string) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	h := r.holds[group]
	if h == nil {
		return
	}
	h.n--
	if len(failed) > 0 {
		if h.drop == nil || len(h.drop)+len(failed) > maxDrop {
			h.drop = make(map[string]struct{}, len(failed))
		}
		for _, id := range failed {
			h.drop[id] = struct{}{}
		}
	}
	if h.n > 0 {
		return
	}
	for i, m := range h.queue {
		if _, ok := h.drop[m.ID]; ok {
			delete(h.drop, m.ID)
		} else {
			r.local.deliver(group, m)
		}
		h.queue[i] = Message{}
	}
	h.queue = h.queue[:0]
	if len(h.drop) == 0 {
		delete(r.holds, group)
	}
}

// deliverLocal delivers a recorded message to the group's local members,
// or queues it while the group is held.
func (r *Redis) deliverLocal(group string, m Message) {
	if r.replicas == 0 {
		r.local.deliver(group, m)
		return
	}
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	h := r.holds[group]
	switch {
	case h == nil:
		r.local.deliver(group, m)
	case h.n > 0:
		h.queue = append(h.queue, m)
	default:
		if _, ok := h.drop[m.ID]; ok {
			delete(h.drop, m.ID)
		} else {
			r.local.deliver(group, m)
		}
		if len(h.drop) == 0 {
			delete(r.holds, group)
		}
	}
}

// hold returns b if it must wait for replicas, else nil.
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

// heldAlone sends one record that waits for replicas in a round trip of
// its own, with its WAIT, and settles it.
func (p *pipeline) heldAlone(ctx context.Context, call *pipeCall) redis.Cmder {
	pipe := p.client.Pipeline()
	call.cmd = call.issue(ctx, pipe)
	wait := p.queueWait(ctx, pipe)
	_, _ = pipe.Exec(ctx)
	p.settleHeld(ctx, []*pipeCall{call}, wait)
	return call.cmd
}

// settleHeld decides the records of a batch that has been sent that wait
// for replicas, wait being the WAIT that followed them, and releases their
// groups. Each record's outcome is kept in its recordBatch for result.
func (p *pipeline) settleHeld(ctx context.Context, batch []*pipeCall, wait *redis.Cmd) {
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
			cmd = b.script().Eval(ctx, retry, b.keys, b.args...)
			w = p.queueWait(ctx, retry)
			_, _ = retry.Exec(ctx)
		}
		ids, err := b.answer(cmd)
		if err != nil {
			// Whether it was recorded is not known: nothing to drop.
			b.heldErr = b.r.fail(ctx, "recorded group send", err)
			b.r.releaseGroup(b.group, nil)
			continue
		}
		n, err := w.Int64()
		switch {
		case err != nil:
			b.heldErr = b.r.fail(ctx, "recorded group send: waiting for replicas", err)
		case n < int64(p.replicas):
			b.heldErr = fmt.Errorf("channellayer: redis recorded group send: %d of %d replicas confirmed within %v: %w",
				n, p.replicas, p.replicaWait, ErrUnavailable)
		default:
			b.ids = ids
			b.r.releaseGroup(b.group, nil)
			continue
		}
		if b.again != nil {
			ids = nil // recorded before, not published now: nothing to drop
		}
		b.r.releaseGroup(b.group, ids)
	}
}

// queueWait queues a WAIT for the replicas on pipe (WAIT counts the
// replicas that have every write of its connection: the pipeline's).
func (p *pipeline) queueWait(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	return pipe.Do(ctx, "WAIT", p.replicas, p.replicaWait.Milliseconds())
}
