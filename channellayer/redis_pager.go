package channellayer

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// keptFloorLua defines, for the scripts that need it, before(a, b) (is
// stream ID a older than b) and floor(stream, size): the ID of the newest
// entry the stream still holds that reads no longer keep (it may hold a few
// more than the history size; see recordScript), or nil. It reads only
// those extra entries, so it costs O(1) per call however long the history.
const keptFloorLua = `
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

// beforeScript reads a page of a group's history before an ID, keeping to
// the last history size entries of the stream.
//
// KEYS[1] history stream. ARGV[1] the ID, ARGV[2] how many messages at
// most, ARGV[3] the history size. It answers nil if the ID is not kept,
// else {more, id, type, body, id, type, body, ...}, newest first, more
// being 1 if older messages are still kept.
var beforeScript = redis.NewScript(keptFloorLua + `
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
