package channellayer

import "github.com/redis/go-redis/v9"

// recordScript appends a message to a group's history stream and publishes
// it with its new ID, atomically, and returns the ID.
//
// KEYS[1] history stream, KEYS[2] the group's pub/sub channel (a key, so a
// cluster routes the script to the group's shard).
// ARGV[1] history size, ARGV[2] type, ARGV[3] body (without "id"),
// ARGV[4] the envelope's type head ("<len>\n<type>"), ARGV[5] the separator
// after the inserted "id" field ("," or ""), ARGV[6] PUBLISH or SPUBLISH.
//
// The published body is the stored one with "id" inserted first: the same
// bytes withID produces. The envelope marks the ID as recorded with "!".
var recordScript = redis.NewScript(`
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 't', ARGV[2], 'd', ARGV[3])
redis.call(ARGV[6], KEYS[2], '\n!' .. id .. '\n' .. ARGV[4] .. '{"id":"' .. id .. '"' .. ARGV[5] .. string.sub(ARGV[3], 2))
return id
`)

// trackScript adds or refreshes a presence entry.
//
// KEYS[1] presence hash (key → info), KEYS[2] expiry zset (key → ms).
// ARGV[1] key, ARGV[2] info, ARGV[3] expiry in ms since the epoch,
// ARGV[4] how long, in ms, the two keys must live at least (so the keys of
// a group nobody tracks any more vanish by themselves, long after every
// entry expired and was announced).
var trackScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local keep = tonumber(ARGV[4])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < keep then
    redis.call('PEXPIRE', KEYS[i], keep)
  end
end
return 1
`)

// untrackScript removes a presence entry. KEYS as trackScript; ARGV[1] key.
var untrackScript = redis.NewScript(`
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// listScript returns the entries that expire after ARGV[1] (now, in ms) as
// key, info, key, info, ...
var listScript = redis.NewScript(`
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
local out = {}
for _, k in ipairs(keys) do
  local v = redis.call('HGET', KEYS[1], k)
  if v then
    out[#out + 1] = k
    out[#out + 1] = v
  end
end
return out
`)

// expireScript removes the entries that expired at or before ARGV[1] (now,
// in ms) and returns them as key, info, ...: each to exactly one caller.
var expireScript = redis.NewScript(`
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {}
for _, k in ipairs(keys) do
  local v = redis.call('HGET', KEYS[1], k)
  redis.call('HDEL', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
  out[#out + 1] = k
  out[#out + 1] = v or ''
end
return out
`)
