package chat

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

func (c *client) older(before string) {
	c.send(map[string]string{"type": "older", "before": before})
}

func texts(t *testing.T, raws []json.RawMessage) (out []string, ids []string) {
	t.Helper()
	for _, raw := range raws {
		var m frame
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Text)
		ids = append(ids, m.ID)
	}
	return out, ids
}

// "older" pages back through what the room keeps (a history of 200 here),
// 50 messages at a time, oldest first, across nodes, until "more" is false
// at the room's retention.
func TestOlder(t *testing.T) {
	eachLayer(t, nil, func(t *testing.T, n1, n2 *testNode) {
		const sent, kept = 230, 200
		for i := range sent {
			m, _ := messageEvent("ann", fmt.Sprint("m", i), "", false)
			if _, err := n1.app.history.GroupSendRecorded(ctxT(t), "r", m); err != nil {
				t.Fatal(err)
			}
		}
		bob := n2.join(t, "bob", "s-bob", "r", "")
		h := bob.joinFrames("bob")
		got, ids := texts(t, h.Messages)
		if len(got) != historyOnJoin || got[0] != fmt.Sprint("m", sent-historyOnJoin) {
			t.Fatalf("history frame starts at %v with %d messages", got[:1], len(got))
		}
		oldest := ids[0]
		next := sent - historyOnJoin // the index of the oldest message seen
		for next > sent-kept {
			bob.older(oldest)
			f := bob.await("older", "")
			page, ids := texts(t, f.Messages)
			want := min(olderPage, next-(sent-kept))
			if len(page) != want || page[0] != fmt.Sprint("m", next-want) || page[len(page)-1] != fmt.Sprint("m", next-1) {
				t.Fatalf("older before m%d: %d messages %v..%v, want m%d..m%d", next, len(page), page[:1], page[len(page)-1:], next-want, next-1)
			}
			next -= want
			if f.More != (next > sent-kept) {
				t.Fatalf("older page ending at m%d says more=%v", next, f.More)
			}
			oldest = ids[0]
		}
		// Before the oldest kept message: nothing, and no more.
		bob.older(oldest)
		if f := bob.await("older", ""); len(f.Messages) != 0 || f.More {
			t.Fatalf("older before the oldest kept message: %d messages, more %v", len(f.Messages), f.More)
		}
	})
}

// A malformed, unknown or trimmed "before" is an error frame bad_id; the
// connection stays open.
func TestOlderBadID(t *testing.T) {
	n := newNode(t, nil, nil) // history of 100
	var first string
	for i := range 101 {
		m, _ := messageEvent("ann", fmt.Sprint("m", i), "", false)
		rec, err := n.app.history.GroupSendRecorded(ctxT(t), "r", m)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = rec.ID
		}
	}
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	for _, raw := range []string{
		`{"type":"older"}`,
		`{"type":"older","before":5}`,
		`{"type":"older","before":""}`,
		`{"type":"older","before":"garbage"}`,
		`{"type":"older","before":"1-0"}`,
		`{"type":"older","before":"` + first + `"}`, // trimmed
	} {
		c.com.SendText(ctxT(t), raw)
		if f := c.await("error", ""); f.Code != codeBadID {
			t.Fatalf("%s: %+v, want bad_id", raw, f)
		}
	}
	c.say("still open")
	c.await("message", "still open")
}

// "older" takes a token of the connection's rate limit, like a message.
func TestOlderRateLimited(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.Rate = 1 }) // burst 2
	m, _ := messageEvent("ann", "m", "", false)
	rec, err := n.app.history.GroupSendRecorded(ctxT(t), "r", m)
	if err != nil {
		t.Fatal(err)
	}
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	for range 3 {
		c.older(rec.ID)
	}
	c.await("older", "")
	c.await("older", "")
	if f := c.next(); f.Type != "error" || f.Code != codeRateLimited {
		t.Fatalf("third request answered %+v, want rate_limited", f)
	}
	c.say("x") // no token either
	if f := c.await("error", ""); f.Code != codeRateLimited {
		t.Fatalf("message after two requests: %+v, want rate_limited", f)
	}
	c.quiet("message", "", 100*time.Millisecond)
}
