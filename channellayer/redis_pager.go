package channellayer

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// beforeScript reads a page of a group's history before an ID, keeping to
// the last history size entries of the stream (it may hold a few more; see
// recordScript).
//
// KEYS[1] history stream. ARGV[1] the ID, ARGV[2] how many messages at
// most, ARGV[3] the history size. It answers nil if the ID is not kept,
// else {more, id, type, body, id, type, body, ...}, newest first, more
// being 1 if older messages are still kept.
var beforeScript = redis.NewScript(`
local n, size = tonumber(ARGV[2]), tonumber(ARGV[3])
local after = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', size + 1)
if #after == 0 or after[1][1] ~= ARGV[1] or #after > size then
  return false
end
local room = size - #after -- kept entries older than the ID
local k = math.min(n, room)
local out = {0}
if k <= 0 then
  if room > 0 then
    out[1] = 1
  end
  return out
end
local want = k + 1 -- the ID itself first
if room > k then
  want = want + 1 -- one more tells whether older ones are kept
end
local xs = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', want)
for i = 2, math.min(#xs, k + 1) do
  local f, t, d = xs[i][2], '', ''
  for j = 1, #f, 2 do
    if f[j] == 't' then t = f[j+1] elseif f[j] == 'd' then d = f[j+1] end
  end
  out[#out+1] = xs[i][1]
  out[#out+1] = t
  out[#out+1] = d
end
if #xs > k + 1 then
  out[1] = 1
end
return out
`)

var _ Pager = (*Redis)(nil)

// Before implements Pager.
func (r *Redis) Before(ctx context.Context, group, id string, n int) ([]Message, bool, error) {
	if !ValidID(id) {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		return nil, false, fmt.Errorf("history of %q before %q: %w", group, id, ErrUnknownID)
	}
	if err := r.usable(ctx, "history"); err != nil {
		return nil, false, err
	}
	res, err := beforeScript.Run(ctx, r.client, []string{r.historyKey(group)}, id, max(n, 0), r.historySize).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, false, fmt.Errorf("history of %q before %q: %w", group, id, ErrUnknownID)
	}
	if err != nil {
		return nil, false, r.fail(ctx, "history", err)
	}
	if len(res) == 0 || (len(res)-1)%3 != 0 {
		return nil, false, r.fail(ctx, "history", fmt.Errorf("history page script answered %d values", len(res)))
	}
	more, _ := res[0].(int64)
	var out []Message
	for i := len(res) - 3; i >= 1; i -= 3 { // oldest first
		mid, _ := res[i].(string)
		t, _ := res[i+1].(string)
		d, _ := res[i+2].(string)
		if m, ok := streamMessage(redis.XMessage{ID: mid, Values: map[string]any{"t": t, "d": d}}); ok {
			out = append(out, m)
		}
	}
	return out, more == 1, nil
}
