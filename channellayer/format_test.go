package channellayer_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// Golden data of the formats the Redis layer stores in and publishes
// through Redis. capture records what this code writes, as Redis holds or
// carries it, with what this code reads back from it; with -golden.write
// it is written to testdata/format-<version>.json, to be read by the next
// versions' tests.
var goldenWrite = flag.Bool("golden.write", false, "write testdata/format-<version>.json from what this code writes to Redis")

// goldenFormat is the format version this code writes.
const goldenFormat = channellayer.FormatVersion

// golden is one capture.
type golden struct {
	Format     int    `json:"format"`
	Prefix     string `json:"prefix"`
	Group      string `json:"group"`
	CapturedAt int64  `json:"captured_at"` // ms since the epoch, by Redis's clock

	// Pub/sub payloads: plain envelopes on the group's channel and a
	// process's channel, recorded envelopes on the group's channel.
	Envelopes []goldenPayload `json:"envelopes"`
	Recorded  []goldenPayload `json:"recorded"`

	Keys       []string       `json:"keys"`        // every key of the layer, sorted
	Stream     []goldenEntry  `json:"stream"`      // the group's history stream, as XRANGE has it
	History    []goldenMsg    `json:"history"`     // Recent, as this code reads the stream
	RecordKeys [][2]string    `json:"record_keys"` // the key hash (HGETALL), sorted
	Keyed      goldenKeyed    `json:"keyed"`
	Presence   goldenPresence `json:"presence"`
	Directory  goldenDir      `json:"directory"`
}

type goldenMsg struct {
	Type string `json:"type"`
	ID   string `json:"id,omitempty"`
	Body string `json:"body"`
}

type goldenPayload struct {
	Name    string `json:"name"`
	Channel string `json:"channel"` // the pub/sub channel
	Payload string `json:"payload"`
	// What this code reads from it: the target (plain envelopes) and
	// the messages.
	Target   string      `json:"target,omitempty"`
	Messages []goldenMsg `json:"messages"`
}

type goldenEntry struct {
	ID     string   `json:"id"`
	Fields []string `json:"fields"`
}

// goldenKeyed is a keyed record sent again: its key and what it returns.
type goldenKeyed struct {
	Key  string    `json:"key"`
	Sent goldenMsg `json:"sent"`
	Want goldenMsg `json:"want"`
}

type goldenPresence struct {
	Hash   [][2]string `json:"hash"`   // HGETALL of the presence hash
	Expiry [][2]string `json:"expiry"` // the expiry set, member and score
	Want   [][2]string `json:"want"`   // List: key, info
}

type goldenDir struct {
	Index    string      `json:"index"`
	Counts   [][2]string `json:"counts"`
	Expiries [][2]string `json:"expiries"`
	Top      [][2]string `json:"top"` // Top: name, count
}

func goldenOf(m channellayer.Message) goldenMsg {
	return goldenMsg{Type: m.Type, ID: m.ID, Body: string(m.Body)}
}

func goldenMsgs(ms []channellayer.Message) []goldenMsg {
	out := make([]goldenMsg, len(ms))
	for i, m := range ms {
		out[i] = goldenOf(m)
	}
	return out
}

// pairs turns a flat reply (k, v, k, v, ...) into sorted pairs.
func pairs(t testing.TB, v any) [][2]string {
	t.Helper()
	var flat []string
	var add func(v any)
	add = func(v any) {
		switch x := v.(type) {
		case []any: // RESP2 flat, or RESP3 pairs (ZRANGE WITHSCORES)
			for _, e := range x {
				add(e)
			}
		case map[any]any: // RESP3 maps
			for k, e := range x {
				add(k)
				add(e)
			}
		case string:
			flat = append(flat, x)
		case int64:
			flat = append(flat, strconv.FormatInt(x, 10))
		case float64:
			flat = append(flat, strconv.FormatFloat(x, 'f', -1, 64))
		default:
			t.Fatalf("unexpected reply %T %v", v, v)
		}
	}
	add(v)
	out := make([][2]string, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		out = append(out, [2]string{flat[i], flat[i+1]})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// capture writes one of everything the layer stores and publishes, on the
// Redis at addr (which holds nothing else), and records it.
func capture(t *testing.T, addr string) golden {
	t.Helper()
	const prefix, g = "gold", "golden room"
	ctx := tctx(t, 30*time.Second)
	raw := newClient(t, addr)
	a := newRedisLayer(t, addr, prefix, channellayer.RedisOptions{HistorySize: 10, GroupTTL: time.Hour})
	b := newRedisLayer(t, addr, prefix, channellayer.RedisOptions{HistorySize: 10, GroupTTL: time.Hour})
	bch := newChan(t, b)
	ach := newChan(t, a, g)
	groupChan := prefix + ":{" + g + "}:g"
	process, _, _ := strings.Cut(bch, "!")
	procChan := prefix + ":proc:{" + process + "}"
	sub := raw.Subscribe(ctx, groupChan, procChan)
	t.Cleanup(func() { _ = sub.Close() })
	for range 2 {
		if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	gd := golden{Format: goldenFormat, Prefix: prefix, Group: g}

	// Plain envelopes: a group send, one except a channel, a directed send.
	plain := []struct {
		name string
		send func(m channellayer.Message) error
	}{
		{"group", func(m channellayer.Message) error { return a.GroupSend(ctx, g, m) }},
		{"group except", func(m channellayer.Message) error {
			return a.GroupSendExcept(ctx, g, m, ach)
		}},
		{"directed", func(m channellayer.Message) error { return a.Send(ctx, bch, m) }},
	}
	for i, p := range plain {
		if err := p.send(mustMsg(t, "chat", map[string]any{"text": fmt.Sprint("plain ", i, " é✓"), "n": i})); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		target, m, _, ok := channellayer.ParseEnvelope(msg.Payload)
		if !ok {
			t.Fatalf("%s: this code cannot read its own envelope %q", p.name, msg.Payload)
		}
		gd.Envelopes = append(gd.Envelopes, goldenPayload{Name: p.name, Channel: msg.Channel, Payload: msg.Payload, Target: target, Messages: []goldenMsg{goldenOf(m)}})
	}
	if _, err := b.Receive(ctx, bch); err != nil {
		t.Fatal(err)
	}

	// Recorded envelopes: one record, one keyed, a batch of three (or
	// as many batches as the pipeline made), one with an empty body.
	keyedMsg := mustMsg(t, "chat", map[string]any{"text": "keyed", "cid": "c-1"})
	if _, err := a.GroupSendRecorded(ctx, g, mustMsg(t, "chat", map[string]any{"text": "recorded"})); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.GroupSendRecordedOnce(ctx, g, "key-1", keyedMsg); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 3)
	for i := range 3 {
		a.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]any{"text": fmt.Sprint("batch ", i)}), func(_ channellayer.Message, err error) { done <- err })
	}
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.GroupSendRecorded(ctx, g, mustMsg(t, "ping", nil)); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 6; {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ms, ok := channellayer.ParseRecorded(msg.Payload)
		if !ok {
			t.Fatalf("this code cannot read its own recorded envelope %q", msg.Payload)
		}
		var want []channellayer.Message
		for _, m := range ms {
			if channellayer.ValidID(m.ID) { // what a node delivers
				want = append(want, m)
			}
		}
		n += len(want)
		gd.Recorded = append(gd.Recorded, goldenPayload{Name: fmt.Sprint("recorded ", len(gd.Recorded)), Channel: msg.Channel, Payload: msg.Payload, Messages: goldenMsgs(want)})
	}

	// What Redis keeps.
	xs, err := raw.Do(ctx, "XRANGE", prefix+":{"+g+"}:h", "-", "+").Slice()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range xs {
		e := x.([]any)
		entry := goldenEntry{ID: e[0].(string)}
		for _, f := range e[1].([]any) {
			entry.Fields = append(entry.Fields, f.(string))
		}
		gd.Stream = append(gd.Stream, entry)
	}
	hist, err := a.Recent(ctx, g, 100)
	if err != nil {
		t.Fatal(err)
	}
	gd.History = goldenMsgs(hist)
	hk, err := raw.Do(ctx, "HGETALL", prefix+":{"+g+"}:k").Result()
	if err != nil {
		t.Fatal(err)
	}
	gd.RecordKeys = pairs(t, hk)
	again, was, err := a.GroupSendRecordedOnce(ctx, g, "key-1", keyedMsg)
	if err != nil || !was {
		t.Fatalf("keyed record sent again: %v, %v", was, err)
	}
	gd.Keyed = goldenKeyed{Key: "key-1", Sent: goldenOf(keyedMsg), Want: goldenOf(again)}

	pr := a
	if err := pr.Track(ctx, g, "entry-1", []byte(`{"k":"alice","t":1}`), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := pr.Track(ctx, g, "entry-2", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	ph, err := raw.Do(ctx, "HGETALL", prefix+":{"+g+"}:p").Result()
	if err != nil {
		t.Fatal(err)
	}
	pe, err := raw.Do(ctx, "ZRANGE", prefix+":{"+g+"}:e", 0, -1, "WITHSCORES").Result()
	if err != nil {
		t.Fatal(err)
	}
	members, err := pr.List(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	gd.Presence = goldenPresence{Hash: pairs(t, ph), Expiry: pairs(t, pe)}
	for _, m := range members {
		gd.Presence.Want = append(gd.Presence.Want, [2]string{m.Key, string(m.Info)})
	}

	dir := a
	gd.Directory.Index = "rooms"
	for name, n := range map[string]int{"Chat Room": 3, "Gaming Room": 1, "{odd} room": 2} {
		if err := dir.SetCount(ctx, "rooms", name, n, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range []string{"n", "t"} {
		v, err := raw.Do(ctx, "ZRANGE", prefix+":dir:{rooms}:"+k, 0, -1, "WITHSCORES").Result()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			gd.Directory.Counts = pairs(t, v)
		} else {
			gd.Directory.Expiries = pairs(t, v)
		}
	}
	top, err := dir.Top(ctx, "rooms", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range top {
		gd.Directory.Top = append(gd.Directory.Top, [2]string{c.Name, fmt.Sprint(c.N)})
	}

	keys, err := raw.Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	gd.Keys = keys
	now, err := raw.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	gd.CapturedAt = now.UnixMilli()
	return gd
}

// TestFormatCapture captures what this code writes to a real redis-server
// and checks that it reads it back; with -golden.write it writes the
// capture to testdata.
func TestFormatCapture(t *testing.T) {
	s := redistest.Start(t)
	gd := capture(t, s.Addr())
	if len(gd.Envelopes) != 3 || len(gd.Stream) != 6 || len(gd.History) != 6 || len(gd.Presence.Want) != 2 || len(gd.Directory.Top) != 3 {
		t.Fatalf("capture incomplete: %d envelopes, %d stream entries, %d in history, %d presence entries, %d directory entries",
			len(gd.Envelopes), len(gd.Stream), len(gd.History), len(gd.Presence.Want), len(gd.Directory.Top))
	}
	// Each payload names this code's format version (see formatVersion in
	// redis_format.go).
	v := strconv.Itoa(gd.Format)
	for _, p := range gd.Envelopes {
		if p.Name != "directed" && !strings.HasPrefix(p.Payload, "v"+v+":") {
			t.Errorf("%s: envelope %q does not name format %s", p.Name, p.Payload, v)
		}
	}
	for _, p := range gd.Recorded {
		if !strings.HasPrefix(p.Payload, "\n*\nv"+v+"\n") {
			t.Errorf("%s: recorded envelope %q does not name format %s", p.Name, p.Payload, v)
		}
	}
	for _, e := range gd.Stream {
		if !slices.Equal(e.Fields[len(e.Fields)-2:], []string{"v", v}) {
			t.Errorf("stream entry %s %q does not name format %s", e.ID, e.Fields, v)
		}
	}
	if !slices.Contains(gd.RecordKeys, [2]string{"", v}) || !slices.Contains(gd.Presence.Hash, [2]string{"", v}) {
		t.Errorf("record-key hash %q or presence hash %q does not name format %s", gd.RecordKeys, gd.Presence.Hash, v)
	}
	if !slices.Contains(gd.Keys, gd.Prefix+":dir:{rooms}:v") {
		t.Errorf("no directory format key among %q", gd.Keys)
	}
	if *goldenWrite {
		b, err := json.MarshalIndent(gd, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Join("testdata", fmt.Sprintf("format-%d.json", gd.Format))
		if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", name)
	}
}
