package channellayer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// trackAllScript adds or refreshes many presence entries of one group.
//
// KEYS as trackScript. ARGV[1] expiry in ms since the epoch, ARGV[2] how
// long the keys must live at least (see trackScript), then key, info pairs.
// It sets the hash's field "" to the format version, as trackScript does.
var trackAllScript = redis.NewScript(formatLua + `
local hset = {'', FORMAT}
local zadd = {}
for i = 3, #ARGV, 2 do
  hset[#hset + 1] = ARGV[i]
  hset[#hset + 1] = ARGV[i + 1]
  zadd[#zadd + 1] = ARGV[1]
  zadd[#zadd + 1] = ARGV[i]
end
if #hset > 2 then
  redis.call('HSET', KEYS[1], unpack(hset))
  redis.call('ZADD', KEYS[2], unpack(zadd))
end
local keep = tonumber(ARGV[2])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < keep then
    redis.call('PEXPIRE', KEYS[i], 2 * keep)
  end
end
return 1
`)

// trackAllChunk bounds the entries of one script call (Lua's unpack has a
// limit of a few thousand values).
const trackAllChunk = 500

// TrackAll implements PresenceRefresher: one script call per group (per
// 500 entries), all in one pipeline, so one round trip (in a cluster, one
// per shard).
func (r *Redis) TrackAll(ctx context.Context, groups map[string][]Member, ttl time.Duration) error {
	if err := checkTrackAll(groups, ttl); err != nil {
		return err
	}
	if err := r.usable(ctx, "presence track"); err != nil {
		return err
	}
	expires := time.Now().Add(ttl).UnixMilli()
	keep := presenceKeep(ttl)
	var calls []scriptCall
	for group, entries := range groups {
		keys := []string{r.presenceKey(group), r.expiryKey(group)}
		calls = pairCalls(calls, keys, expires, keep, len(entries), trackAllChunk, func(i int) (any, any) {
			return entries[i].Key, entries[i].Info
		})
	}
	if _, err := r.runAll(ctx, trackAllScript, calls); err != nil {
		return r.fail(ctx, "presence track", err)
	}
	return nil
}

// scriptCall is one call of a script: its keys and arguments.
type scriptCall struct {
	keys []string
	args []any
}

// pairCalls appends to calls the calls of a script on keys that take an
// expiry and a keep time, then n pairs (pair gives the i-th), at most
// chunk pairs per call.
func pairCalls(calls []scriptCall, keys []string, expires, keep int64, n, chunk int, pair func(i int) (any, any)) []scriptCall {
	for start := 0; start < n; start += chunk {
		end := min(n, start+chunk)
		args := make([]any, 0, 2+2*(end-start))
		args = append(args, expires, keep)
		for i := start; i < end; i++ {
			k, v := pair(i)
			args = append(args, k, v)
		}
		calls = append(calls, scriptCall{keys, args})
	}
	return calls
}

// runAll runs script once per call, all in one pipeline, by its SHA: the
// script's text goes to a server only when it does not know it yet (a
// NOSCRIPT answer), in a second pipeline of the calls it refused. A busy
// process runs these scripts thousands of times a second; sending the
// text each time would make the server read and hash it each time.
func (r *Redis) runAll(ctx context.Context, script *redis.Script, calls []scriptCall) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	var again []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		return cmds, nil
	}
	_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range again {
			cmds[i] = script.Eval(ctx, p, calls[i].keys, calls[i].args...)
		}
		return nil
	})
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
			return nil, e
		}
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	return cmds, nil
}

// ExpireAll implements PresenceRefresher: SweepAll, without the next
// expiries.
func (r *Redis) ExpireAll(ctx context.Context, groups []string) (map[string][]Member, error) {
	swept, err := r.SweepAll(ctx, groups)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]Member)
	for g, s := range swept {
		if len(s.Expired) > 0 {
			out[g] = s.Expired
		}
	}
	return out, nil
}

// ListAll implements PresenceLister: one list script per group, all in one
// pipeline, so one round trip (in a cluster, one per shard: go-redis's
// cluster client splits the pipeline by the slot of each script's first
// key, and both keys of a group share its hash tag).
func (r *Redis) ListAll(ctx context.Context, groups []string) (map[string][]Member, error) {
	return r.presenceAll(ctx, groups, listScript, "presence list")
}

// presenceAll runs script (listScript) on each group's
// keys, all in one pipeline, and returns the entries it gives back by
// group, sorted by key; groups with none are left out. A group named
// twice is run twice; the map holds its last non-empty result.
func (r *Redis) presenceAll(ctx context.Context, groups []string, script *redis.Script, op string) (map[string][]Member, error) {
	res, err := r.presenceRun(ctx, groups, script, op)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]Member)
	for i, g := range groups {
		if members := parseMembers(res[i]); len(members) > 0 {
			out[g] = members
		}
	}
	return out, nil
}

// SweepAll implements PresenceSweeper: one sweep script per group, all in
// one pipeline, so one round trip (in a cluster, one per shard).
func (r *Redis) SweepAll(ctx context.Context, groups []string) (map[string]Swept, error) {
	const op = "presence expire"
	res, err := r.presenceRun(ctx, groups, sweepScript, op)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Swept, len(groups))
	for i, g := range groups {
		var s Swept
		if len(res[i]) > 0 && res[i][0] != "" {
			ms, err := strconv.ParseFloat(res[i][0], 64)
			if err != nil {
				return nil, r.fail(ctx, op, fmt.Errorf("next expiry %q: %v", res[i][0], err))
			}
			s.Next = time.UnixMilli(int64(ms))
		}
		if len(res[i]) > 1 {
			s.Expired = parseMembers(res[i][1:])
		}
		out[g] = s
	}
	return out, nil
}

// presenceRun runs script on each group's keys with ARGV[1] now (ms), all
// in one pipeline, and returns the answers in the order of groups.
func (r *Redis) presenceRun(ctx context.Context, groups []string, script *redis.Script, op string) ([][]string, error) {
	if err := r.usable(ctx, op); err != nil {
		return nil, err
	}
	if len(groups) == 0 {
		return nil, nil
	}
	now := time.Now().UnixMilli()
	calls := make([]scriptCall, len(groups))
	for i, g := range groups {
		calls[i] = scriptCall{[]string{r.presenceKey(g), r.expiryKey(g)}, []any{now}}
	}
	cmds, err := r.runAll(ctx, script, calls)
	if err != nil {
		return nil, r.fail(ctx, op, err)
	}
	out := make([][]string, len(cmds))
	for i, c := range cmds {
		res, err := c.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, r.fail(ctx, op, err)
		}
		out[i] = res
	}
	return out, nil
}
