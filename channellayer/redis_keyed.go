package channellayer

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// recordOnceScript is recordScript for one message with a record key (see
// GroupSendRecordedOnce). The group's key hash maps each key to the ID of
// its message. If the key's message is still kept (among the last history
// size entries of the stream), the script answers {id, type, body} and
// records nothing; else it records and publishes the message as
// recordScript does, remembers the key, and answers {id}.
//
// Either way it writes (the key again, or the record), so that a WAIT
// behind it on the same connection covers the key's message: a message
// recorded before, whose replicas never confirmed it, is confirmed now or
// refused again (RedisOptions.Replicas).
//
// The stream entry and the envelope carry the format version as
// recordScript's do, and the hash's field "" holds it (see formatVersion).
//
// The hash is kept no bigger than the history: once it holds twice the
// history size, the keys of messages no longer kept are dropped (so each
// record costs O(1) on average). With a group TTL, each record sets the
// stream and the hash to expire after it, as recordScript does; without
// one the hash takes the stream's TTL, if it has one.
//
// KEYS[1] history stream, KEYS[2] the group's pub/sub channel, KEYS[3] the
// key hash. ARGV[1] history size, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] how
// long, in ms, the stream and the hash live after this record (0: see
// above), ARGV[4] the key, ARGV[5] type, ARGV[6] body (without "id"),
// ARGV[7] the separator after the inserted "id" field.
var recordOnceScript = redis.NewScript(formatLua + keptFloorLua + `
local size = tonumber(ARGV[1])
local old = redis.call('HGET', KEYS[3], ARGV[4])
if old then
  local xs = redis.call('XRANGE', KEYS[1], old, old)
  local f = floor(KEYS[1], size)
  if #xs > 0 and (f == nil or before(f, old)) then
    local f, t, d = xs[1][2], nil, nil
    for i = 1, #f, 2 do
      if f[i] == 't' then t = f[i+1] elseif f[i] == 'd' then d = f[i+1] end
    end
    if t and d then
      redis.call('HSET', KEYS[3], ARGV[4], old)
      return {old, t, d}
    end
  end
  redis.call('HDEL', KEYS[3], ARGV[4])
end
local t, d = ARGV[5], ARGV[6]
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', t, 'd', d, 'v', FORMAT)
local body = '{"id":"' .. id .. '"' .. ARGV[7] .. string.sub(d, 2)
redis.call(ARGV[2], KEYS[2], '\n*\nv' .. FORMAT .. '\n1\n2\nv{}\n' .. id .. '\n' .. #t .. '\n' .. #body .. '\n' .. t .. body)
redis.call('HSET', KEYS[3], ARGV[4], id, '', FORMAT)
if redis.call('HLEN', KEYS[3]) > 2 * size then
  local w = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', size)
  local oms, oseq = string.match(w[#w][1], '^(%d+)-(%d+)$')
  oms, oseq = tonumber(oms), tonumber(oseq)
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local ms, seq = string.match(all[i+1], '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    if all[i] ~= '' and (ms == nil or ms < oms or (ms == oms and seq < oseq)) then
      redis.call('HDEL', KEYS[3], all[i])
    end
  end
end
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
else
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
return {id}
`)

var _ IdempotentRecorder = (*Redis)(nil)

func (r *Redis) recordKeysKey(group string) string { return r.groupKey(group, "k") }

// GroupSendRecordedOnce implements IdempotentRecorder: one script looks the
// key up and, if its message is no longer kept or was never recorded,
// records and publishes the message (see recordOnceScript). It goes through
// the group's publish pipeline, after the records queued before it, and
// honours RedisOptions.Replicas and GroupTTL as GroupSendRecorded does: with
// Replicas, a WAIT follows it in its round trip, and if the replicas do not
// confirm in time it fails with ErrUnavailable (the message may be recorded
// and seen by other processes: a call again with the same key returns it,
// once the replicas have it, and never records it twice).
func (r *Redis) GroupSendRecordedOnce(ctx context.Context, group, key string, msg Message) (Message, bool, error) {
	if err := checkRecordKey(key); err != nil {
		return Message{}, false, err
	}
	if err := checkMessage(msg); err != nil {
		return Message{}, false, err
	}
	if err := r.usable(ctx, "recorded group send"); err != nil {
		return Message{}, false, err
	}
	b := r.newRecordBatch(group, msg, nil)
	b.key = key
	c, err := r.pipe.of(ctx, b.channel).doRecord(ctx, b)
	msgs, err := b.result(ctx, c, err)
	if err != nil {
		return Message{}, false, err
	}
	return msgs[0], b.again != nil, nil
}
