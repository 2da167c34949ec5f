package channellayer

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Early delivery. The record script publishes a batch of records to every
// process, this one included; their pub/sub copy reaches the receive loop
// some time after the script's answer reaches the round trip that sent it
// (on a busy node, a tenth of a millisecond and more). The round trip
// delivers the batch to the local members at once instead, when that keeps
// what the members see the same:
//
//   - The group's history order: the script answers the ID of the entry
//     before the batch's first, and the batch goes early only if that is
//     the last record delivered here. So no record before it, of any
//     process, is still unread on the pub/sub connection; its copy comes
//     after, and deliverRecorded drops it as delivered.
//   - One sender's order, with plain group sends: a plain send of this
//     process is published with a mark (see plainTarget), and while one is
//     not read back from the pub/sub connection no batch goes early. One
//     lost with a connection is never read back: the group's records then
//     go by pub/sub until its subscription ends (its last local member
//     leaves), which is rare and costs only time.
//
// Not with RedisOptions.Replicas, whose records reach the members only once
// the replicas have them (see holdGroup).

// early delivers b's messages to the local members from its script's
// answer c if it may (see above), and reports whether it did. It reads the
// answer once for the batch's callers (see resultIDs).
func (b *recordBatch) early(c redis.Cmder) bool {
	r := b.r
	if r.replicas > 0 || b.key != "" || b.err != nil || c == nil || c.Err() != nil {
		return false
	}
	ids, err := b.answer(c)
	if err != nil {
		return false
	}
	b.settled, b.ids = true, ids
	prev, ok := parseID(b.prev)
	if !ok {
		return false // the first record of the group's history
	}
	parsed := make([]streamID, len(ids))
	for i, id := range ids {
		if parsed[i], ok = parseID(id); !ok {
			return false
		}
	}
	r.mu.Lock()
	s := r.subs[b.channel]
	r.mu.Unlock()
	if s == nil {
		return false // no local member
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if !s.hasLast || s.last != prev || s.read != s.sent {
		return false
	}
	for i, id := range ids {
		s.last = parsed[i]
		r.local.deliver(b.group, b.withID(i, id))
	}
	r.early.Add(uint64(len(ids)))
	return true
}

// plainMark separates the excepted channel of a plain group envelope
// from the mark that tells this process its own sends (see plainTarget).
// Channel names never hold it.
const plainMark = "~"

// plainTarget returns the target of a plain group envelope on pub/sub
// channel ch that skips except: except, and if the group has local members
// a mark, "~<generation>", after except or, without one, after this
// process's ID prefix (a name no channel has). It counts the send as not
// read back (see early).
//
// Other processes, of this format or of an earlier one, take the target as
// the name of a channel they do not own, and skip nobody, as before.
func (r *Redis) plainTarget(ch, except string) string {
	if r.replicas > 0 {
		return except
	}
	r.mu.Lock()
	s := r.subs[ch]
	r.mu.Unlock()
	if s == nil {
		return except
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.sent++
	if except != "" && !r.local.owns(except) {
		// A channel of another process: never read back as this one's, so
		// the group's records go by pub/sub while the subscription lasts.
		return except
	}
	if except == "" {
		except = r.local.prefix
	}
	return except + plainMark + strconv.FormatUint(s.gen, 10)
}

// readBack delivers a plain group message to the local members of s, and
// counts one of this process's sends as read back (see plainTarget). The
// target is as the envelope had it.
func (r *Redis) readBack(s *groupSub, m Message, target string) {
	except, mark, marked := strings.Cut(target, plainMark)
	if !marked {
		r.local.deliverExcept(s.group, m, target)
		return
	}
	r.local.deliverExcept(s.group, m, except)
	if !r.local.owns(except) {
		return
	}
	gen, err := strconv.ParseUint(mark, 10, 64)
	s.dmu.Lock()
	if err == nil && gen == s.gen && s.read < s.sent {
		s.read++
	}
	s.dmu.Unlock()
}

// subGens numbers the subscriptions of a process: a mark names the one
// its send was counted in, so that a send to an earlier subscription of the
// group is not read back as one to the present one.
var subGens atomic.Uint64
