package chat

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func (c *client) sayCID(text, cid string) {
	c.send(map[string]string{"type": "message", "text": text, "cid": cid})
}

// A message with a cid is recorded once per session and cid: a repeat, on
// the same socket, another tab or another node, gets the original back
// (same ID, text and cid) and nobody else hears it again. Another session
// may use the same cid.
func TestMessageCID(t *testing.T) {
	eachLayer(t, nil, func(t *testing.T, n1, n2 *testNode) {
		ann := n1.join(t, "ann", "s-ann", "r", "")
		ann.joinFrames("ann")
		bob := n2.join(t, "bob", "s-bob", "r", "")
		bob.joinFrames("ann", "bob")

		ann.sayCID("hello", "c-1")
		var orig frame
		for _, c := range []*client{ann, bob} {
			orig = c.await("message", "hello")
			if orig.CID != "c-1" || orig.ID == "" || orig.User != "ann" {
				t.Fatalf("message frame %+v, want one carrying cid c-1", orig)
			}
		}
		// Again on the same socket, with another text: the original comes back.
		ann.sayCID("hello again", "c-1")
		if f := ann.await("message", ""); f.ID != orig.ID || f.Text != "hello" || f.CID != "c-1" {
			t.Fatalf("repeat answered %+v, want the original %+v", f, orig)
		}
		// Again from another tab of the same session, on the other node.
		tab := n2.join(t, "ann", "s-ann", "r", "")
		tab.joinFrames("ann", "bob")
		tab.sayCID("hello", "c-1")
		if f := tab.await("message", ""); f.ID != orig.ID || f.Text != "hello" {
			t.Fatalf("repeat from another tab answered %+v, want the original %+v", f, orig)
		}
		bob.quiet("message", "", 300*time.Millisecond)
		// Another session, same cid: a message of its own.
		bob.sayCID("mine", "c-1")
		if f := ann.await("message", "mine"); f.ID == orig.ID || f.CID != "c-1" {
			t.Fatalf("another session's message %+v", f)
		}
		// History keeps each once.
		late := n1.join(t, "cid", "s-cid", "r", "")
		h := late.joinFrames("ann", "bob", "cid")
		var texts []string
		for _, raw := range h.Messages {
			var m frame
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			texts = append(texts, m.Text)
		}
		if strings.Join(texts, ",") != "hello,mine" {
			t.Fatalf("history holds %q, want hello,mine", texts)
		}
	})
}

// Two sockets of one session racing the same cid (a resend after a
// reconnect while the first send is under way): the room gets it once.
func TestMessageCIDRace(t *testing.T) {
	eachLayer(t, nil, func(t *testing.T, n1, n2 *testNode) {
		bob := n1.join(t, "bob", "s-bob", "r", "")
		bob.joinFrames("bob")
		tabs := []*client{n1.join(t, "ann", "s-ann", "r", ""), n2.join(t, "ann", "s-ann", "r", "")}
		tabs[0].joinFrames("ann", "bob")
		tabs[1].joinFrames("ann", "bob")
		const rounds = 10
		for i := range rounds {
			var wg sync.WaitGroup
			for _, tab := range tabs {
				wg.Go(func() { tab.sayCID(fmt.Sprint("race ", i), fmt.Sprint("cid-", i)) })
			}
			wg.Wait()
		}
		for i := range rounds {
			bob.await("message", fmt.Sprint("race ", i))
		}
		bob.during(300*time.Millisecond, func(f frame, b []byte) {
			if f.Type == "message" {
				t.Fatalf("a raced message came twice: %s", b)
			}
		})
	})
}

func TestMessageCIDInvalid(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	for _, cid := range []string{`""`, `"` + strings.Repeat("x", 65) + `"`, `"caf\u00e9"`, `"a\u0001b"`, `5`, `null`, `{"a":1}`} {
		c.com.SendText(ctxT(t), `{"type":"message","text":"hi","cid":`+cid+`}`)
		if f := c.await("error", ""); f.Code != codeBadJSON || !strings.Contains(f.Text, "cid") {
			t.Fatalf("cid %s: %+v, want bad_json naming the cid", cid, f)
		}
	}
	// 64 printable characters, space included, are fine.
	ok := strings.Repeat("a ~", 21) + "z"
	c.sayCID("fine", ok)
	if f := c.await("message", "fine"); f.CID != ok {
		t.Fatalf("message %+v, want cid %q", f, ok)
	}
	c.quiet("error", "", 100*time.Millisecond)
}

// A repeat while the layer is down is answered unavailable, and once it is
// back the message is recorded once.
func TestMessageCIDUnavailable(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	n.layer.(*flakyLayer).down.Store(true)
	c.sayCID("lost?", "x")
	if f := c.await("error", ""); f.Code != codeUnavailable {
		t.Fatalf("got %+v, want unavailable", f)
	}
	n.layer.(*flakyLayer).down.Store(false)
	c.sayCID("lost?", "x")
	first := c.await("message", "lost?")
	c.sayCID("lost?", "x")
	if again := c.await("message", "lost?"); again.ID != first.ID {
		t.Fatalf("repeat got ID %s, want %s", again.ID, first.ID)
	}
	recent, err := n.app.history.Recent(ctxT(t), "r", 10)
	if err != nil || len(recent) != 1 {
		t.Fatalf("history holds %d messages (%v), want 1", len(recent), err)
	}
}
