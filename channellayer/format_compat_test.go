package channellayer_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Upgrades node by node: this code reads what the previous format wrote
// (golden data captured from it), and the previous format's decoders read
// what this code writes.

func loadGolden(t *testing.T, version int) golden {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("format-%d.json", version)))
	if err != nil {
		t.Fatal(err)
	}
	var gd golden
	if err := json.Unmarshal(b, &gd); err != nil {
		t.Fatal(err)
	}
	if gd.Format != version {
		t.Fatalf("format-%d.json holds format %d", version, gd.Format)
	}
	return gd
}

func sameMsgs(t *testing.T, what string, got []channellayer.Message, want []goldenMsg) {
	t.Helper()
	g := goldenMsgs(got)
	if len(g) == 0 {
		g = nil
	}
	if len(want) == 0 {
		want = nil
	}
	if !slices.Equal(g, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, want)
	}
}

// format1Channel is the shape of a channel name of a format 1 process.
var format1Channel = regexp.MustCompile(`^p[0-9a-f]{12}!`)

// TestFormatReadsPrevious loads what the previous format published and
// kept (testdata) and checks that this code reads it as that format's
// code did: envelopes parsed and delivered live, history read, a keyed
// record found again, presence listed, the directory ranked.
func TestFormatReadsPrevious(t *testing.T) {
	gd := loadGolden(t, channellayer.FormatVersion-1)
	for _, p := range gd.Envelopes {
		target, m, _, ok := channellayer.ParseEnvelope(p.Payload)
		if !ok || target != p.Target {
			t.Errorf("%s: ParseEnvelope = %q, %v; want target %q", p.Name, target, ok, p.Target)
		}
		sameMsgs(t, p.Name, []channellayer.Message{m}, p.Messages)
	}
	for _, p := range gd.Recorded {
		ms, ok := channellayer.ParseRecorded(p.Payload)
		if !ok {
			t.Errorf("%s: not read", p.Name)
		}
		sameMsgs(t, p.Name, ms, p.Messages)
	}

	eachStore(t, func(t *testing.T, s *store) {
		ctx := tctx(t, 20*time.Second)
		raw := newClient(t, s.addr)
		l := newRedisLayer(t, s.addr, gd.Prefix, channellayer.RedisOptions{HistorySize: 10})
		ch := newChan(t, l, gd.Group)

		// Live: what previous nodes publish reaches this node's members.
		var want []goldenMsg
		for _, p := range gd.Envelopes {
			payload, channel := p.Payload, p.Channel
			if p.Name == "directed" { // to a channel of this process
				_, rest, _ := strings.Cut(payload, "\n")
				process, _, _ := strings.Cut(ch, "!")
				payload, channel = ch+"\n"+rest, gd.Prefix+":proc:{"+process+"}"
			}
			if err := raw.Publish(ctx, channel, payload).Err(); err != nil {
				t.Fatal(err)
			}
			want = append(want, p.Messages...)
		}
		for _, p := range gd.Recorded {
			if err := raw.Publish(ctx, p.Channel, p.Payload).Err(); err != nil {
				t.Fatal(err)
			}
			want = append(want, p.Messages...)
		}
		var got []channellayer.Message
		for range want {
			m := recv(t, l, ch)
			m.Group = ""
			got = append(got, m)
		}
		sameMsgs(t, "delivered live", got, want)
		silent(t, l, ch)

		// Kept: load what the previous format kept, and read it.
		now := time.Now()
		future := strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)
		g := gd.Prefix + ":{" + gd.Group + "}:"
		for _, e := range gd.Stream {
			if err := raw.XAdd(ctx, &redis.XAddArgs{Stream: g + "h", ID: e.ID, Values: e.Fields}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, kv := range gd.RecordKeys {
			if err := raw.HSet(ctx, g+"k", kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, kv := range gd.Presence.Hash {
			if err := raw.HSet(ctx, g+"p", kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, kv := range gd.Presence.Expiry {
			if err := raw.Do(ctx, "ZADD", g+"e", future, kv[0]).Err(); err != nil {
				t.Fatal(err)
			}
		}
		dir := gd.Prefix + ":dir:{" + gd.Directory.Index + "}:"
		for _, kv := range gd.Directory.Counts {
			if err := raw.Do(ctx, "ZADD", dir+"n", kv[1], kv[0]).Err(); err != nil {
				t.Fatal(err)
			}
			if err := raw.Do(ctx, "ZADD", dir+"t", future, kv[0]).Err(); err != nil {
				t.Fatal(err)
			}
		}

		hist, err := l.Recent(ctx, gd.Group, 100)
		if err != nil {
			t.Fatal(err)
		}
		sameMsgs(t, "Recent", hist, gd.History)
		first, last := gd.History[0].ID, gd.History[len(gd.History)-1].ID
		since, err := l.Since(ctx, gd.Group, first)
		if err != nil {
			t.Fatal(err)
		}
		sameMsgs(t, "Since the first", since, gd.History[1:])
		before, more, err := l.Before(ctx, gd.Group, last, 100)
		if err != nil || more {
			t.Fatalf("Before the last: more %v, %v", more, err)
		}
		sameMsgs(t, "Before the last", before, gd.History[:len(gd.History)-1])

		sent := channellayer.Message{Type: gd.Keyed.Sent.Type, Body: []byte(gd.Keyed.Sent.Body)}
		rec, again, err := l.GroupSendRecordedOnce(ctx, gd.Group, gd.Keyed.Key, sent)
		if err != nil || !again {
			t.Fatalf("keyed record of the previous format sent again: again %v, %v", again, err)
		}
		sameMsgs(t, "keyed record sent again", []channellayer.Message{rec}, []goldenMsg{gd.Keyed.Want})

		members, err := l.List(ctx, gd.Group)
		if err != nil {
			t.Fatal(err)
		}
		var gotMembers [][2]string
		for _, m := range members {
			gotMembers = append(gotMembers, [2]string{m.Key, string(m.Info)})
		}
		if !slices.Equal(gotMembers, gd.Presence.Want) {
			t.Errorf("presence: %q, want %q", gotMembers, gd.Presence.Want)
		}

		top, err := l.Top(ctx, gd.Directory.Index, 10)
		if err != nil {
			t.Fatal(err)
		}
		var gotTop [][2]string
		for _, c := range top {
			gotTop = append(gotTop, [2]string{c.Name, strconv.Itoa(c.N)})
		}
		if !slices.Equal(gotTop, gd.Directory.Top) {
			t.Errorf("directory: %q, want %q", gotTop, gd.Directory.Top)
		}

		// This code records after them, live and in history.
		m, err := l.GroupSendRecorded(ctx, gd.Group, mustMsg(t, "chat", map[string]string{"text": "new"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := recv(t, l, ch); got.ID != m.ID || channellayer.CompareID(m.ID, last) <= 0 {
			t.Errorf("new record %s delivered as %s; want it after %s", m.ID, got.ID, last)
		}
		if after, err := l.Since(ctx, gd.Group, last); err != nil || len(after) != 1 || after[0].ID != m.ID {
			t.Errorf("Since the last old record: %v, %v; want the new one", after, err)
		}
	})
}

// TestFormatReadByPrevious captures what this code writes and reads it
// with the previous format's frozen decoders and scripts (see
// frozen_v1_test.go): a node of that format, in the same deployment during
// an upgrade, delivers the same messages, reads the same history, finds
// the same keyed record, lists the same presence and ranks the same
// directory; what it records in turn, this code reads.
func TestFormatReadByPrevious(t *testing.T) {
	if channellayer.FormatVersion != 2 {
		t.Fatalf("format %d: freeze the decoders of format %d and test them here", channellayer.FormatVersion, channellayer.FormatVersion-1)
	}
	eachStore(t, func(t *testing.T, s *store) {
		gd := capture(t, s.addr)
		ctx := tctx(t, 20*time.Second)
		raw := newClient(t, s.addr)
		for _, p := range gd.Envelopes {
			if p.Name == "directed" {
				continue // to a process of this format (see below)
			}
			ms, except, ok := v1Receive(p.Payload)
			if !ok {
				t.Errorf("%s: a format 1 node drops %q", p.Name, p.Payload)
			}
			if except != "" && format1Channel.MatchString(except) {
				t.Errorf("%s: a format 1 node skips its channel %q", p.Name, except)
			}
			sameMsgs(t, p.Name+" read by format 1", ms, p.Messages)
		}
		for _, p := range gd.Recorded {
			ms, _, ok := v1Receive(p.Payload)
			if !ok {
				t.Errorf("%s: a format 1 node drops %q", p.Name, p.Payload)
			}
			sameMsgs(t, p.Name+" read by format 1", ms, p.Messages)
		}
		// A directed send to a process of format 1 is in format 1.
		m := mustMsg(t, "chat", map[string]string{"text": "to an old node"})
		for _, process := range []string{"p0123456789ab", "p0123456789ab.2"} {
			p := channellayer.EnvelopeTo(process, process+"!7", m)
			target, got, _, ok := v1ParseEnvelope(p)
			if old := !strings.Contains(process, "."); old && (!ok || target != process+"!7" || string(got.Body) != string(m.Body)) {
				t.Errorf("directed send to a format 1 process: format 1 reads %q, %s, %v from %q", target, got.Body, ok, p)
			}
			target, got, _, ok = channellayer.ParseEnvelope(p)
			if !ok || target != process+"!7" || string(got.Body) != string(m.Body) {
				t.Errorf("directed send to %s: read back %q, %s, %v from %q", process, target, got.Body, ok, p)
			}
		}

		g := gd.Prefix + ":{" + gd.Group + "}:"
		xs, err := raw.XRange(ctx, g+"h", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var hist []channellayer.Message
		for _, x := range xs {
			if m, ok := v1StreamMessage(x); ok {
				hist = append(hist, m)
			}
		}
		sameMsgs(t, "history read by format 1", hist, gd.History)

		last := gd.History[len(gd.History)-1].ID
		page, err := v1BeforeScript.Run(ctx, raw, []string{g + "h"}, last, 100, 10).Slice()
		if err != nil {
			t.Fatal(err)
		}
		var paged []channellayer.Message
		for i := len(page) - 3; i >= 1; i -= 3 {
			id, typ, d := page[i].(string), page[i+1].(string), page[i+2].(string)
			m, _ := v1StreamMessage(redis.XMessage{ID: id, Values: map[string]any{"t": typ, "d": d}})
			paged = append(paged, m)
		}
		sameMsgs(t, "a page before the last read by format 1", paged, gd.History[:len(gd.History)-1])

		sent := gd.Keyed.Sent
		sep := ","
		if sent.Body == `{"type":"`+sent.Type+`"}` {
			sep = ""
		}
		ans, err := v1RecordOnceScript.Run(ctx, raw, []string{g + "h", g + "g", g + "k"}, 10, "PUBLISH", gd.Keyed.Key, sent.Type, sent.Body, sep).StringSlice()
		if err != nil || len(ans) != 3 {
			t.Fatalf("format 1 sends the keyed record again: %q, %v; want the recorded one", ans, err)
		}
		again, _ := v1StreamMessage(redis.XMessage{ID: ans[0], Values: map[string]any{"t": ans[1], "d": ans[2]}})
		sameMsgs(t, "keyed record sent again by format 1", []channellayer.Message{again}, []goldenMsg{gd.Keyed.Want})

		list, err := v1ListScript.Run(ctx, raw, []string{g + "p", g + "e"}, time.Now().UnixMilli()).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		var members [][2]string
		for i := 0; i+1 < len(list); i += 2 {
			members = append(members, [2]string{list[i], list[i+1]})
		}
		slices.SortFunc(members, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		if !slices.Equal(members, gd.Presence.Want) {
			t.Errorf("presence listed by format 1: %q, want %q", members, gd.Presence.Want)
		}

		dir := gd.Prefix + ":dir:{" + gd.Directory.Index + "}:"
		top, err := v1TopScript.Run(ctx, raw, []string{dir + "n", dir + "t"}, time.Now().UnixMilli(), 10).Slice()
		if err != nil {
			t.Fatal(err)
		}
		var ranked [][2]string
		entries, _ := top[0].([]any)
		for i := 0; i+1 < len(entries); i += 2 {
			ranked = append(ranked, [2]string{entries[i].(string), entries[i+1].(string)})
		}
		slices.SortFunc(ranked, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		want := slices.Clone(gd.Directory.Top)
		slices.SortFunc(want, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		if !slices.Equal(ranked, want) {
			t.Errorf("directory ranked by format 1: %q, want %q", ranked, want)
		}

		// A format 1 node records a keyed message in the hash this code
		// wrote; this code finds it again, and reads it in history.
		ans, err = v1RecordOnceScript.Run(ctx, raw, []string{g + "h", g + "g", g + "k"}, 10, "PUBLISH", "old-node", "chat", `{"type":"chat","text":"from format 1"}`, ",").StringSlice()
		if err != nil || len(ans) != 1 {
			t.Fatalf("format 1 records a keyed message: %q, %v", ans, err)
		}
		l := newRedisLayer(t, s.addr, gd.Prefix, channellayer.RedisOptions{HistorySize: 10})
		rec, again2, err := l.GroupSendRecordedOnce(ctx, gd.Group, "old-node", mustMsg(t, "chat", map[string]string{"text": "from format 1"}))
		if err != nil || !again2 || rec.ID != ans[0] {
			t.Errorf("this code sends format 1's keyed record again: %s, again %v, %v; want %s", rec.ID, again2, err, ans[0])
		}
		recent, err := l.Recent(ctx, gd.Group, 1)
		if err != nil || len(recent) != 1 || recent[0].ID != ans[0] {
			t.Errorf("Recent after format 1's record: %v, %v", recent, err)
		}
	})
}
