package channellayer

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// GroupSendRecorded implements History: one script appends the message to the
// group's stream and publishes it with its new ID.
func (r *Redis) GroupSendRecorded(ctx context.Context, group string, msg Message) (Message, error) {
	if err := checkMessage(msg); err != nil {
		return Message{}, err
	}
	if err := r.usable(ctx, "recorded group send"); err != nil {
		return Message{}, err
	}
	b := r.newRecordBatch(group, msg, nil)
	c, err := r.pipe.of(ctx, b.channel).doRecord(ctx, b)
	msgs, err := b.result(ctx, c, err)
	if err != nil {
		return Message{}, err
	}
	return msgs[0], nil
}

// GroupSendRecordedAsync implements Recorder. The record joins the next
// batch of its pipeline; while the layer is busy, a batch waits a few
// milliseconds for more (see pipeline), so the sender gets on with its
// next message meanwhile instead of waiting for each round trip. A record
// queued right behind an unsent one of the same group joins its script
// call: a busy group costs Redis one script call and one pub/sub message
// per batch, not per message.
//
// A record that fails at once (an invalid message, a layer that is closed
// or not connected) still waits for the group's earlier records, so that
// done keeps the call order.
func (r *Redis) GroupSendRecordedAsync(group string, msg Message, done func(Message, error)) {
	b := r.newRecordBatch(group, msg, done)
	b.err = checkMessage(msg)
	if b.err == nil {
		b.err = r.usable(context.Background(), "recorded group send")
	}
	r.pipe.of(noWait, b.channel).asyncRecord(b) // returns at once: never waits for the cluster's slots
}

// Limits of one script call: a batch that reaches either goes as it is.
const (
	recordBatchMax   = 64        // messages
	recordBatchBytes = 256 << 10 // bytes of bodies
)

// recordBatch is one call of recordScript: messages of one group, recorded
// and published in their order.
type recordBatch struct {
	r       *Redis
	group   string
	channel string   // the group's pub/sub channel, which picks the pipeline
	keys    []string // history stream and channel, made when the batch is sent
	msgs    []Message
	done    []func(Message, error) // unwaited records': one per message
	bytes   int
	args    []any // as sent, for a NOSCRIPT retry
	err     error // set: the record fails with it in its turn, sending nothing

	// A keyed record (GroupSendRecordedOnce) of its one message: the
	// record key, and the message recorded before with it, if the script
	// answered one (then nothing was recorded or published).
	key   string
	again *Message

	// With RedisOptions.Replicas, the outcome settleHeld decided.
	settled bool
	ids     []string // the recorded IDs, if the replicas confirmed them
	heldErr error

	// Storage for the usual batch of one message, and the batch's pipeline
	// call (see pipeline.asyncRecord): a record's batch is one allocation,
	// not four.
	one     [1]Message
	oneDone [1]func(Message, error)
	keyPair [2]string
	call    pipeCall
}

func (r *Redis) newRecordBatch(group string, msg Message, done func(Message, error)) *recordBatch {
	b := &recordBatch{r: r, group: group, channel: r.groupChan(group)}
	b.one[0] = msg
	b.msgs = b.one[:]
	b.bytes = len(msg.Body)
	if done != nil {
		b.oneDone[0] = done
		b.done = b.oneDone[:]
	}
	return b
}

// Script arguments that are the same for every record, made interface
// values once: converting a string or a number to one allocates.
var (
	recordSHA               any = recordScript.Hash()
	publishArg, spublishArg any = "PUBLISH", "SPUBLISH"
	sepNone, sepComma       any = "", ","
)

// sepArg is idSep's answer as an argument.
func sepArg(body []byte) any {
	if idSep(body) == "" {
		return sepNone
	}
	return sepComma
}

// cmdProcessor is a client or a pipeline: what queues a prepared command.
type cmdProcessor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// merge takes in next, an unwaited record of one message queued right
// behind b, if both are of the same group and b has room for it. The
// pipeline calls it under its lock, before b is sent.
func (b *recordBatch) merge(next *recordBatch) bool {
	if b.done == nil || next.done == nil || b.err != nil || next.err != nil || b.group != next.group || b.full() ||
		b.bytes+next.bytes > recordBatchBytes {
		return false
	}
	b.msgs = append(b.msgs, next.msgs...)
	b.done = append(b.done, next.done...)
	b.bytes += next.bytes
	return true
}

// full reports whether b takes no more messages.
func (b *recordBatch) full() bool {
	return len(b.msgs) >= recordBatchMax || b.bytes >= recordBatchBytes
}

func (b *recordBatch) queue(ctx context.Context, c redis.Cmdable) redis.Cmder {
	if b.err != nil {
		return nil // it only fails, in its turn
	}
	if b.r.replicas > 0 {
		b.r.holdGroup(b.group) // released by settleHeld
	}
	pub := publishArg
	if b.r.cluster {
		pub = spublishArg
	}
	if b.key != "" {
		m := b.msgs[0]
		b.keys = []string{b.r.historyKey(b.group), b.channel, b.r.recordKeysKey(b.group)}
		b.args = []any{b.r.sizeArg, pub, b.r.ttlArg, b.key, m.Type, m.Body, sepArg(m.Body)}
		return recordOnceScript.EvalSha(ctx, c, b.keys, b.args...)
	}
	b.keyPair = [2]string{b.r.historyKey(b.group), b.channel}
	b.keys = b.keyPair[:]
	// EVALSHA sha 2 key key ARGV...: the command built whole, as EvalSha
	// would build it, with the constant arguments boxed once.
	full := make([]any, 0, 8+3*len(b.msgs))
	full = append(full, "evalsha", recordSHA, 2, b.keys[0], b.keys[1], b.r.sizeArg, pub, b.r.ttlArg)
	for _, m := range b.msgs {
		full = append(full, m.Type, m.Body, sepArg(m.Body))
	}
	b.args = full[5:] // ARGV, for a NOSCRIPT retry
	proc, ok := c.(cmdProcessor)
	if !ok {
		return recordScript.EvalSha(ctx, c, b.keys, b.args...)
	}
	rc := redis.NewCmd(ctx, full...)
	rc.SetFirstKeyPos(3) // a cluster routes it by the history key
	_ = proc.Process(ctx, rc)
	return rc
}

// script is the script b's queue sends.
func (b *recordBatch) script() *redis.Script {
	if b.key != "" {
		return recordOnceScript
	}
	return recordScript
}

// answer reads the script's answer: the IDs of b's messages. A keyed
// record's answer may be the message recorded before with its key
// instead (see recordOnceScript): it sets b.again, and its ID is the one
// answered.
func (b *recordBatch) answer(c redis.Cmder) ([]string, error) {
	res, err := c.(*redis.Cmd).StringSlice()
	if err != nil {
		return nil, err
	}
	if b.key != "" && len(res) == 3 {
		b.again = &Message{Type: res[1], ID: res[0], Body: withID([]byte(res[2]), res[0])}
		return res[:1], nil
	}
	if len(res) != len(b.msgs) {
		return nil, fmt.Errorf("record script answered %d values for %d messages", len(res), len(b.msgs))
	}
	return res, nil
}

// result turns the script's answer into the recorded messages.
func (b *recordBatch) result(ctx context.Context, c redis.Cmder, err error) ([]Message, error) {
	ids, err := b.resultIDs(ctx, c, err)
	return b.recorded(ids, err)
}

// resultIDs reads the script's answer (the held outcome with replicas),
// sending the script whole, within ctx, if Redis lost it.
func (b *recordBatch) resultIDs(ctx context.Context, c redis.Cmder, err error) ([]string, error) {
	r := b.r
	if b.settled {
		return b.ids, b.heldErr
	}
	if err == nil && noScript(c) {
		c = b.script().Eval(ctx, r.client, b.keys, b.args...) // Redis lost its scripts (a restart): send it whole
	}
	var ids []string
	if err == nil {
		ids, err = b.answer(c)
	}
	if err != nil {
		return nil, r.fail(ctx, "recorded group send", err)
	}
	return ids, nil
}

// noScript reports whether c failed because Redis does not know its script.
func noScript(c redis.Cmder) bool {
	err := c.Err()
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// recorded returns b's messages with their IDs (a keyed record's earlier
// message if it had one), or err.
func (b *recordBatch) recorded(ids []string, err error) ([]Message, error) {
	if err != nil {
		return nil, err
	}
	if b.again != nil {
		return []Message{*b.again}, nil
	}
	out := make([]Message, len(ids))
	for i, id := range ids {
		out[i] = b.withID(i, id)
	}
	return out, nil
}

// withID is b's i-th message, recorded as id.
func (b *recordBatch) withID(i int, id string) Message {
	m := b.msgs[i]
	return Message{Type: m.Type, ID: id, Body: withID(m.Body, id)}
}

// finish hands each unwaited record its result.
func (b *recordBatch) finish(c redis.Cmder, err error) {
	if b.err != nil {
		for _, done := range b.done {
			done(Message{}, b.err)
		}
		return
	}
	r := b.r
	ctx := r.ctx
	if err == nil && !b.settled && noScript(c) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(r.ctx, redisBatchTimeout) // bounds the NOSCRIPT retry
		defer cancel()
	}
	ids, err := b.resultIDs(ctx, c, err)
	if err != nil && r.ctx.Err() != nil {
		err = ErrClosed // cut short by Close
	}
	switch {
	case err != nil:
		for _, done := range b.done {
			done(Message{}, err)
		}
	case b.again != nil:
		for _, done := range b.done {
			done(*b.again, nil)
		}
	default:
		for i, done := range b.done {
			done(b.withID(i, ids[i]), nil)
		}
	}
}

// Recorded envelopes. The record script publishes a batch as "\n*", the
// version item (see formatVersion; format 1 had none) and then, per
// message, "\n<id>\n<len(type)>\n<len(body)>\n<type><body>", the body
// with its "id" inserted as withID does.

const recordedMark = "\n*"

// parseRecorded calls each for the messages of a recorded envelope, in
// order, and reports whether p was one and well formed (each has been
// called for the messages before a malformed part). The bodies share one
// copy of p.
func parseRecorded(p string, each func(Message)) bool {
	rest, ok := strings.CutPrefix(p, recordedMark)
	if !ok {
		return false
	}
	_, rest = cutVersionItem(rest)
	buf := []byte(rest)
	for len(rest) > 0 {
		var id, lt, lb string
		var ok1, ok2, ok3 bool
		if rest, ok = strings.CutPrefix(rest, "\n"); !ok {
			return false
		}
		id, rest, ok1 = strings.Cut(rest, "\n")
		lt, rest, ok2 = strings.Cut(rest, "\n")
		lb, rest, ok3 = strings.Cut(rest, "\n")
		nt, err1 := strconv.Atoi(lt)
		nb, err2 := strconv.Atoi(lb)
		if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil || nt <= 0 || nb <= 0 || nt > len(rest) || nb > len(rest)-nt {
			return false
		}
		at := len(buf) - len(rest) + nt // the body's offset in buf
		each(Message{Type: rest[:nt], ID: id, Body: buf[at : at+nb : at+nb]})
		rest = rest[nt+nb:]
	}
	return true
}
