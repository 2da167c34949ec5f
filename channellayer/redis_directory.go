package channellayer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A directory index is two sorted sets under one hash tag, so that it
// lives on one cluster shard: "<prefix>:dir:{<index>}:n" (name → count)
// and ":t" (name → expiry, ms since the epoch), and ":v", the format
// version of its writers.

// setCountsScript sets or removes entries. KEYS[1] counts, KEYS[2]
// expiries, KEYS[3] the index's format version (see formatVersion), set
// with every entry. ARGV[1] expiry (ms), ARGV[2] how long, in ms, the keys
// must live at least (an index nobody sets any more vanishes by itself),
// then name, count pairs; a count <= 0 removes its entry.
var setCountsScript = redis.NewScript(formatLua + `
local counts, expiries = {}, {}
for i = 3, #ARGV, 2 do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  if n <= 0 then
    redis.call('ZREM', KEYS[1], name)
    redis.call('ZREM', KEYS[2], name)
  else
    counts[#counts + 1] = n
    counts[#counts + 1] = name
    expiries[#expiries + 1] = ARGV[1]
    expiries[#expiries + 1] = name
  end
end
if #counts > 0 then
  redis.call('ZADD', KEYS[1], unpack(counts))
  redis.call('ZADD', KEYS[2], unpack(expiries))
  redis.call('SET', KEYS[3], FORMAT)
  local keep = tonumber(ARGV[2])
  for i = 1, 3 do
    if redis.call('PTTL', KEYS[i]) < keep then
      redis.call('PEXPIRE', KEYS[i], 2 * keep)
    end
  end
end
return 1
`)

// setCountsChunk bounds the entries of one setCountsScript call (Lua's
// unpack has a limit of a few thousand values).
const setCountsChunk = 500

// topScript drops up to 1000 expired entries, then answers {top, ties}:
// top the first ARGV[2] entries by count as name, count, name, count, ...
// (ties in reverse name order, as Redis has them) and, if top is full,
// ties the names (in name order, at most ARGV[2]) that have the count of
// its last entry, so that the caller can break ties by name. KEYS as
// setCountsScript; ARGV[1] now (ms).
var topScript = redis.NewScript(`
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

// countsScript answers the live count of each name ARGV[2...] (0 if none).
// KEYS as setCountsScript; ARGV[1] now (ms).
var countsScript = redis.NewScript(`
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

var _ Directory = (*Redis)(nil)

func (r *Redis) dirKeys(index string) []string {
	k := r.prefix + ":dir:{" + escapeGroup(index) + "}:"
	return []string{k + "n", k + "t", k + "v"}
}

// SetCount implements Directory. Expiry times come from this process's clock.
func (r *Redis) SetCount(ctx context.Context, index, name string, n int, ttl time.Duration) error {
	return r.SetCounts(ctx, index, []Count{{Name: name, N: n}}, ttl)
}

// SetCounts implements DirectoryBatcher: one script call per 500 entries,
// all in one pipeline.
func (r *Redis) SetCounts(ctx context.Context, index string, counts []Count, ttl time.Duration) error {
	for _, c := range counts {
		if err := checkCount(index, c.Name, ttl); err != nil {
			return err
		}
	}
	if len(counts) == 0 {
		return nil
	}
	if err := r.usable(ctx, "directory set"); err != nil {
		return err
	}
	expires := time.Now().Add(ttl).UnixMilli()
	keep := (2*ttl + time.Minute).Milliseconds()
	calls := pairCalls(nil, r.dirKeys(index), expires, keep, len(counts), setCountsChunk, func(i int) (any, any) {
		return counts[i].Name, counts[i].N
	})
	if _, err := r.runAll(ctx, setCountsScript, calls); err != nil {
		return r.fail(ctx, "directory set", err)
	}
	return nil
}

// Top implements Directory.
func (r *Redis) Top(ctx context.Context, index string, n int) ([]Count, error) {
	if err := r.usable(ctx, "directory top"); err != nil {
		return nil, err
	}
	res, err := topScript.Run(ctx, r.client, r.dirKeys(index), time.Now().UnixMilli(), max(n, 0)).Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("directory script answered %d values", len(res))
	}
	if err != nil {
		return nil, r.fail(ctx, "directory top", err)
	}
	top, _ := res[0].([]any)
	ties, _ := res[1].([]any)
	var out []Count
	for i := 0; i+1 < len(top); i += 2 {
		name, _ := top[i].(string)
		score, _ := top[i+1].(string)
		c, err := strconv.ParseFloat(score, 64)
		if err != nil {
			return nil, r.fail(ctx, "directory top", fmt.Errorf("count %q: %v", score, err))
		}
		out = append(out, Count{Name: name, N: int(c)})
	}
	if len(ties) > 0 && len(out) > 0 {
		// The entries with the last count are the first ones by name.
		last := out[len(out)-1].N
		keep := out[:0]
		for _, c := range out {
			if c.N > last {
				keep = append(keep, c)
			}
		}
		for _, t := range ties {
			if name, _ := t.(string); len(keep) < n {
				keep = append(keep, Count{Name: name, N: last})
			}
		}
		out = keep
	}
	sortCounts(out)
	return out, nil
}

// Counts implements Directory.
func (r *Redis) Counts(ctx context.Context, index string, names []string) ([]int, error) {
	if len(names) == 0 {
		return nil, ctx.Err()
	}
	if err := r.usable(ctx, "directory counts"); err != nil {
		return nil, err
	}
	args := make([]any, 0, len(names)+1)
	args = append(args, time.Now().UnixMilli())
	for _, name := range names {
		args = append(args, name)
	}
	res, err := countsScript.Run(ctx, r.client, r.dirKeys(index), args...).Int64Slice()
	if err != nil {
		return nil, r.fail(ctx, "directory counts", err)
	}
	if len(res) != len(names) {
		return nil, r.fail(ctx, "directory counts", fmt.Errorf("script answered %d counts for %d names", len(res), len(names)))
	}
	out := make([]int, len(res))
	for i, c := range res {
		out[i] = int(c)
	}
	return out, nil
}
