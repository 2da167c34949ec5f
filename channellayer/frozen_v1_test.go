package channellayer_test

import (
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
)

// The decoders of format version 1 (the releases before format versions),
// frozen: copies of what those nodes run to read what Redis carries and
// keeps, so that the tests can check that they read what this code writes
// (see TestFormatReadByPrevious). Never change them.

// v1ParseEnvelope is format 1's parseEnvelope.
func v1ParseEnvelope(p string) (target string, m channellayer.Message, recorded, ok bool) {
	target, rest, ok1 := strings.Cut(p, "\n")
	id, rest, ok2 := strings.Cut(rest, "\n")
	ls, rest, ok3 := strings.Cut(rest, "\n")
	n, err := strconv.Atoi(ls)
	if !ok1 || !ok2 || !ok3 || err != nil || n <= 0 || n >= len(rest) {
		return "", channellayer.Message{}, false, false
	}
	id, recorded = strings.CutPrefix(id, "!")
	return target, channellayer.Message{Type: rest[:n], ID: id, Body: []byte(rest[n:])}, recorded, true
}

// v1ParseRecorded is format 1's parseRecorded.
func v1ParseRecorded(p string, each func(channellayer.Message)) bool {
	rest, ok := strings.CutPrefix(p, "\n*")
	if !ok {
		return false
	}
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
		at := len(buf) - len(rest) + nt
		each(channellayer.Message{Type: rest[:nt], ID: id, Body: buf[at : at+nb : at+nb]})
		rest = rest[nt+nb:]
	}
	return true
}

// v1Receive is what a format 1 node delivers of a payload on a group's
// channel (handle and deliverRecorded): recorded messages with a history
// ID, and plain ones; ok false if it drops the payload as malformed.
func v1Receive(p string) (ms []channellayer.Message, except string, ok bool) {
	if strings.HasPrefix(p, "\n*") {
		ok = v1ParseRecorded(p, func(m channellayer.Message) {
			if _, valid := v1ParseID(m.ID); valid {
				ms = append(ms, m)
			}
		})
		return ms, "", ok
	}
	except, m, recorded, ok := v1ParseEnvelope(p)
	if !ok {
		return nil, "", false
	}
	if recorded {
		if _, valid := v1ParseID(m.ID); !valid {
			return nil, "", true
		}
	}
	return []channellayer.Message{m}, except, true
}

// v1ParseID is format 1's parseID.
func v1ParseID(s string) ([2]uint64, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return [2]uint64{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return [2]uint64{}, false
	}
	return [2]uint64{ms, seq}, true
}

// v1StreamMessage is format 1's streamMessage, with withID.
func v1StreamMessage(x redis.XMessage) (channellayer.Message, bool) {
	t, _ := x.Values["t"].(string)
	d, _ := x.Values["d"].(string)
	if t == "" || len(d) == 0 || d[0] != '{' {
		return channellayer.Message{}, false
	}
	body := `{"id":"` + x.ID + `"`
	if rest := strings.TrimSpace(d[1:]); len(rest) > 0 && rest[0] != '}' {
		body += ","
	}
	return channellayer.Message{Type: t, ID: x.ID, Body: []byte(body + d[1:])}, true
}

// Format 1's scripts that read what Redis keeps.

const v1KeptFloorLua = `
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function floor(stream, size)
  local extra = redis.call('XLEN', stream) - size
  if extra <= 0 then
    return nil
  end
  local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', extra)
  return gone[#gone][1]
end
`

var v1RecordOnceScript = redis.NewScript(v1KeptFloorLua + `
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

var v1BeforeScript = redis.NewScript(v1KeptFloorLua + `
local n, size = tonumber(ARGV[2]), tonumber(ARGV[3])
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local f = floor(KEYS[1], size)
if f and not before(f, ARGV[1]) then
  return false
end
local out = {0}
local xs = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', math.max(n, 0) + 2)
for i = 2, #xs do -- xs[1] is the ID itself
  if f and not before(f, xs[i][1]) then
    break
  end
  if i > n + 1 then
    out[1] = 1
    break
  end
  local fs, t, d = xs[i][2], '', ''
  for j = 1, #fs, 2 do
    if fs[j] == 't' then t = fs[j+1] elseif fs[j] == 'd' then d = fs[j+1] end
  end
  out[#out+1] = xs[i][1]
  out[#out+1] = t
  out[#out+1] = d
end
return out
`)

var v1ListScript = redis.NewScript(`
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

var v1ExpireScript = redis.NewScript(`
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

var v1TopScript = redis.NewScript(`
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, name in ipairs(old) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
end
local n = tonumber(ARGV[2])
if n <= 0 then
  return {{}, {}}
end
local top = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
local ties = {}
if #top == 2 * n then
  local last = top[#top]
  ties = redis.call('ZRANGEBYSCORE', KEYS[1], last, last, 'LIMIT', 0, n)
end
return {top, ties}
`)

var v1CountsScript = redis.NewScript(`
local now, out = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  local t = redis.call('ZSCORE', KEYS[2], ARGV[i])
  local n = 0
  if t and tonumber(t) > now then
    n = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]) or 0)
  end
  out[#out+1] = n
end
return out
`)
