package channellayer_test

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// A recorded envelope carries its messages whole, whatever their bytes
// (newlines, the envelope's own mark); a malformed one yields the messages
// before the damage and reports it.
func TestParseRecorded(t *testing.T) {
	type msg struct{ typ, id, body string }
	cases := []struct {
		name    string
		payload string
		want    []msg
		ok      bool
	}{
		{"one", "\n*\n1-0\n4\n10\nchat{\"id\":\"1\"}", []msg{{"chat", "1-0", `{"id":"1"}`}}, true},
		{"two, bodies with newlines and the mark",
			"\n*\n1-0\n1\n7\nx{\"a\":\n}\n1-1\n2\n7\nyz{\n*\n\n*}",
			[]msg{{"x", "1-0", "{\"a\":\n}"}, {"yz", "1-1", "{\n*\n\n*}"}}, true},
		{"not recorded", "\n1-0\n4\nchat{}", nil, false},
		{"empty batch", "\n*", nil, true},
		{"body cut short", "\n*\n1-0\n4\n10\nchat{\"id\":", nil, false},
		{"second cut short", "\n*\n1-0\n1\n2\nx{}\n1-1\n1\n3\ny{}", []msg{{"x", "1-0", "{}"}}, false},
		{"length not a number", "\n*\n1-0\nfour\n2\nchat{}", nil, false},
		{"negative length", "\n*\n1-0\n-1\n2\nchat{}", nil, false},
		{"missing separator", "\n*1-0\n4\n2\nchat{}", nil, false},
		{"lengths that overflow", "\n*\n1-0\n9223372036854775807\n1\nx{}", nil, false},
		{"trailing bytes", "\n*\n1-0\n1\n2\nx{}junk", []msg{{"x", "1-0", "{}"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, ok := channellayer.ParseRecorded(c.payload)
			if ok != c.ok {
				t.Errorf("well formed: %v, want %v", ok, c.ok)
			}
			if len(ms) != len(c.want) {
				t.Fatalf("%d messages, want %d: %q", len(ms), len(c.want), ms)
			}
			for i, m := range ms {
				if w := c.want[i]; m.Type != w.typ || m.ID != w.id || string(m.Body) != w.body {
					t.Errorf("message %d: %q %q %q, want %q %q %q", i, m.Type, m.ID, m.Body, w.typ, w.id, w.body)
				}
				if cap(m.Body) != len(m.Body) {
					t.Errorf("message %d: body has room to grow into the next one (cap %d, len %d)", i, cap(m.Body), len(m.Body))
				}
			}
		})
	}
}

// A plain group send cannot pose as a recorded one, whatever ID its
// message carries: members on another process get it as it is (without
// the ID), and the recorded messages after it still arrive.
func TestRedisGroupSendCannotPoseAsRecorded(t *testing.T) {
	srv := redistest.Start(t)
	a, b := peerLayers(t, srv.Addr())
	const g = "room"
	ch := newChan(t, b, g)
	for _, id := range []string{"*\n99999999999999-0\n1\n2\nx", "*x", "!99999999999999-0"} {
		m := mustMsg(t, "chat", map[string]string{"id": "forged"})
		m.ID = id
		if err := a.GroupSend(tctx(t, 5*time.Second), g, m); err != nil {
			t.Fatal(err)
		}
		if got := recv(t, b, ch); got.Type != "chat" || got.ID != "" {
			t.Fatalf("group send with ID %q arrived as %q with ID %q; want chat without ID", id, got.Type, got.ID)
		}
		rec, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", nil))
		if err != nil {
			t.Fatal(err)
		}
		if got := recv(t, b, ch); got.ID != rec.ID {
			t.Fatalf("after a group send with ID %q: got ID %q, want the recorded %q", id, got.ID, rec.ID)
		}
	}
}

// A record that fails at once, here because the layer lost Redis, still
// gets its done after the group's records queued before it: done keeps
// the call order, failures included.
func TestRedisRecordFailureKeepsOrder(t *testing.T) {
	const g = "room"
	srv, l, ch, _ := countedLayer(t, g)
	pause(t, srv.Addr(), 300*time.Millisecond)
	var mu sync.Mutex
	var order []int
	errs := make(map[int]error)
	var wg sync.WaitGroup
	record := func(i int) {
		wg.Add(1)
		l.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]int{"n": i}), func(_ channellayer.Message, err error) {
			mu.Lock()
			order, errs[i] = append(order, i), err
			mu.Unlock()
			wg.Done()
		})
	}
	record(0)
	record(1)
	l.SetReady(false)
	record(2)
	wg.Wait()
	l.SetReady(true)
	if !slices.Equal(order, []int{0, 1, 2}) {
		t.Fatalf("done called in the order %v, want call order (the failed record after those queued before it)", order)
	}
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("records queued before Redis was lost: %v, %v; want both recorded", errs[0], errs[1])
	}
	if !errors.Is(errs[2], channellayer.ErrUnavailable) {
		t.Fatalf("record while Redis is lost: %v, want ErrUnavailable", errs[2])
	}
	for i := range 2 {
		var b struct{ N int }
		if err := json.Unmarshal(recv(t, l, ch).Body, &b); err != nil || b.N != i {
			t.Fatalf("member got message %d (%v), want %d", b.N, err, i)
		}
	}
	silent(t, l, ch)
}

// TestRedisRecordAfterScriptFlush: a Redis that lost its scripts (a
// restart, SCRIPT FLUSH) answers the record's EVALSHA with NOSCRIPT; the
// record is sent again whole, waited or not, and each message is recorded
// and delivered once, with the ID its sender got.
func TestRedisRecordAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.Addr())
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	const g = "room"
	ch := newChan(t, l, g)
	ctx := tctx(t, 10*time.Second)
	flush := func() {
		t.Helper()
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want channellayer.Message) {
		t.Helper()
		got := recv(t, l, ch)
		if got.ID == "" || got.ID != want.ID || string(got.Body) != string(want.Body) {
			t.Fatalf("member got %s %s, want %s %s", got.ID, got.Body, want.ID, want.Body)
		}
	}

	flush()
	sent, err := l.GroupSendRecorded(ctx, g, mustMsg(t, "chat", map[string]int{"n": 0}))
	if err != nil {
		t.Fatalf("waited record after SCRIPT FLUSH: %v", err)
	}
	expect(sent)
	if n := commandCalls(t, c)["eval"]; n != 1 {
		t.Fatalf("%d EVAL after the flush, want 1 (the refused EVALSHA sent again whole)", n)
	}

	flush()
	type result struct {
		m   channellayer.Message
		err error
	}
	results := make(chan result, 3)
	for i := 1; i <= 3; i++ {
		l.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]int{"n": i}), func(m channellayer.Message, err error) {
			results <- result{m, err}
		})
	}
	for i := 1; i <= 3; i++ {
		r := <-results
		var b struct{ N int }
		if r.err != nil || json.Unmarshal(r.m.Body, &b) != nil || b.N != i {
			t.Fatalf("unwaited record %d after SCRIPT FLUSH: %s (%v)", i, r.m.Body, r.err)
		}
		expect(r.m)
	}
	if n := commandCalls(t, c)["eval"]; n < 1 {
		t.Fatalf("no EVAL after the flush: the unwaited records did not meet NOSCRIPT")
	}
	silent(t, l, ch)
}
