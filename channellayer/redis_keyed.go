package channellayer

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// recordOnceScript is recordScript for one message with a record key (see
// GroupSendRecordedOnce). The group's key hash maps each key to the ID of
// its message. If the key's message is still kept (among the last history
// size entries of the stream), the script answers {id, type, body} and
// records nothing; else it records and publishes the message as
// recordScript does, remembers the key, and answers {id}.
//
// The hash is kept no bigger than the history: once it holds twice the
// history size, the keys of messages no longer kept are dropped (so each
// record costs O(1) on average), and it expires with the stream if the
// stream has a TTL.
//
// KEYS[1] history stream, KEYS[2] the group's pub/sub channel, KEYS[3] the
// key hash. ARGV[1] history size, ARGV[2] PUBLISH or SPUBLISH, ARGV[3] the
// key, ARGV[4] type, ARGV[5] body (without "id"), ARGV[6] the separator
// after the inserted "id" field.
var recordOnceScript = redis.NewScript(keptFloorLua + `
local size = tonumber(ARGV[1])
local old = redis.call('HGET', KEYS[3], ARGV[3])
if old then
  local xs = redis.call('XRANGE', KEYS[1], old, old)
  local f = floor(KEYS[1], size)
  if #xs > 0 and (f == nil or before(f, old)) then
    local f, t, d = xs[1][2], nil, nil
    for i = 1, #f, 2 do
      if f[i] == 't' then t = f[i+1] elseif f[i] == 'd' then d = f[i+1] end
    end
    if t and d then
      return {old, t, d}
    end
  end
  redis.call('HDEL', KEYS[3], ARGV[3])
end
local t, d = ARGV[4], ARGV[5]
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', t, 'd', d)
local body = '{"id":"' .. id .. '"' .. ARGV[6] .. string.sub(d, 2)
redis.call(ARGV[2], KEYS[2], '\n*\n' .. id .. '\n' .. #t .. '\n' .. #body .. '\n' .. t .. body)
redis.call('HSET', KEYS[3], ARGV[3], id)
if redis.call('HLEN', KEYS[3]) > 2 * size then
  local w = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', size)
  local oms, oseq = string.match(w[#w][1], '^(%d+)-(%d+)$')
  oms, oseq = tonumber(oms), tonumber(oseq)
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local ms, seq = string.match(all[i+1], '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    if ms == nil or ms < oms or (ms == oms and seq < oseq) then
      redis.call('HDEL', KEYS[3], all[i])
    end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {id}
`)

var _ IdempotentRecorder = (*Redis)(nil)

func (r *Redis) recordKeysKey(group string) string { return r.groupKey(group, "k") }

// GroupSendRecordedOnce implements IdempotentRecorder: one script looks the
// key up and, if its message is no longer kept or was never recorded,
// records and publishes the message (see recordOnceScript). It goes through
// the group's publish pipeline, after the records queued before it.
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
	cmd := "PUBLISH"
	if r.cluster {
		cmd = "SPUBLISH"
	}
	channel := r.groupChan(group)
	keys := []string{r.historyKey(group), channel, r.recordKeysKey(group)}
	args := []any{r.historySize, cmd, key, msg.Type, msg.Body, idSep(msg.Body)}
	c, err := r.pipe.of(channel).do(ctx, func(ctx context.Context, c redis.Cmdable) redis.Cmder {
		return recordOnceScript.EvalSha(ctx, c, keys, args...)
	})
	if err == nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		c = recordOnceScript.Eval(ctx, r.client, keys, args...) // Redis lost its scripts (a restart)
	}
	var res []string
	if err == nil {
		res, err = c.(*redis.Cmd).StringSlice()
	}
	if err == nil && len(res) != 1 && len(res) != 3 {
		err = fmt.Errorf("record script answered %d values", len(res))
	}
	if err != nil {
		return Message{}, false, r.fail(ctx, "recorded group send", err)
	}
	id := res[0]
	if len(res) == 3 { // recorded before
		return Message{Type: res[1], ID: id, Body: withID([]byte(res[2]), id)}, true, nil
	}
	return Message{Type: msg.Type, ID: id, Body: withID(msg.Body, id)}, false, nil
}
