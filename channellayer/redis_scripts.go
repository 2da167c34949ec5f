package channellayer

import "github.com/redis/go-redis/v9"

// recordScript appends messages to a group's history stream and publishes
// them with their new IDs in one pub/sub message (see parseRecorded),
// atomically, and returns the IDs. Entries and envelope carry the format
// version (see formatVersion).
//
// KEYS[1] history stream, KEYS[2] the group's pub/sub channel (a key, so a
// cluster routes the script to the group's shard).
// ARGV[1] history size, ARGV[2] PUBLISH or SPUBLISH; ARGV[3] how long,
// in ms, the stream lives after this record (0: for ever); then per
// message its type, its body (without "id") and the separator after the
// inserted "id" field ("," or "").
//
// A published body is the stored one with "id" inserted first: the same
// bytes withID produces. The stream is trimmed to about the history size
// (whole nodes at a time, which costs Redis far less than trimming on every
// message); reads keep to the last history size messages.
var recordScript = redis.NewScript(formatLua + `
local out, ids = {'\n*\nv' .. FORMAT .. '\n1\n2\nv{}'}, {}
for i = 4, #ARGV, 3 do
  local t, d = ARGV[i], ARGV[i+1]
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', t, 'd', d, 'v', FORMAT)
  local body = '{"id":"' .. id .. '"' .. ARGV[i+2] .. string.sub(d, 2)
  out[#out+1] = '\n' .. id .. '\n' .. #t .. '\n' .. #body .. '\n' .. t .. body
  ids[#ids+1] = id
end
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call(ARGV[2], KEYS[2], table.concat(out))
return ids
`)

// trackScript adds or refreshes a presence entry, and sets the hash's
// field "" to the format version (see formatVersion).
//
// KEYS[1] presence hash (key → info), KEYS[2] expiry zset (key → ms).
// ARGV[1] key, ARGV[2] info, ARGV[3] expiry in ms since the epoch,
// ARGV[4] how long, in ms, the two keys must live at least (so the keys of
// a group nobody tracks any more vanish by themselves, long after every
// entry expired and was announced).
var trackScript = redis.NewScript(formatLua + `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], '', FORMAT)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local keep = tonumber(ARGV[4])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < keep then
    redis.call('PEXPIRE', KEYS[i], 2 * keep)
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
// key, info, key, info, ... Their infos are read with one HMGET per
// 500 entries, not one HGET each: a room of 100 is listed with
// two calls, not 101.
var listScript = redis.NewScript(`
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
local out = {}
for i = 1, #keys, 500 do
  local last = math.min(i + 499, #keys)
  local vals = redis.call('HMGET', KEYS[1], unpack(keys, i, last))
  for j = i, last do
    local v = vals[j - i + 1]
    if v then
      out[#out + 1] = keys[j]
      out[#out + 1] = v
    end
  end
end
return out
`)

// sweepScript removes the entries that expired at or before ARGV[1] (now,
// in ms) and returns them as key, info, ...: each to exactly one caller;
// before them it answers the expiry (ms since the epoch) of the earliest
// entry left, or "" if none is. Like listScript it reads, and removes, 500
// entries per call.
var sweepScript = redis.NewScript(`
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local out = {''}
for i = 1, #keys, 500 do
  local last = math.min(i + 499, #keys)
  local vals = redis.call('HMGET', KEYS[1], unpack(keys, i, last))
  redis.call('HDEL', KEYS[1], unpack(keys, i, last))
  redis.call('ZREM', KEYS[2], unpack(keys, i, last))
  for j = i, last do
    out[#out + 1] = keys[j]
    out[#out + 1] = vals[j - i + 1] or ''
  end
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  out[1] = first[2]
end
return out
`)
