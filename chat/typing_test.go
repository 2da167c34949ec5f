package chat

import (
	"bytes"
	"testing"
	"time"
)

func (c *client) typing() { c.send(map[string]string{"type": "typing"}) }

// awaitRaw skips frames until one of type typ arrives and returns it as sent.
func (c *client) awaitRaw(typ string) []byte {
	c.t.Helper()
	for {
		b, err := c.com.Receive(ctxT(c.t))
		if err != nil {
			c.t.Fatalf("receiving: %v", err)
		}
		if bytes.HasPrefix(b, []byte(`{"type":"`+typ+`"`)) {
			return b
		}
	}
}

// A typing signal reaches the others in the room on every node, as
// {"type":"typing","user":...} and nothing more, not the sender; at most
// one per interval per connection is forwarded; nothing is recorded.
func TestTyping(t *testing.T) {
	const every = 400 * time.Millisecond
	eachLayer(t, func(c *Config) { c.TypingInterval = every }, func(t *testing.T, n1, n2 *testNode) {
		ann := n1.join(t, "ann", "s-ann", "r", "")
		ann.joinFrames("ann")
		bob := n2.join(t, "bob", "s-bob", "r", "")
		bob.joinFrames("ann", "bob")
		// Node 1 learns of bob's join (on node 2) a little later: cid's
		// first frame there lists bob only once ann's does.
		ann.awaitUsers("ann", "bob")
		cid := n1.join(t, "cid", "s-cid", "r", "")
		cid.joinFrames("ann", "bob", "cid")
		other := n2.join(t, "dan", "s-dan", "elsewhere", "")
		other.joinFrames("dan")

		start := time.Now()
		ann.typing()
		for _, c := range []*client{bob, cid} {
			if got := c.awaitRaw("typing"); string(got) != `{"type":"typing","user":"ann"}` {
				t.Fatalf("typing frame %s", got)
			}
		}
		// Extras within the interval are dropped, without an error.
		ann.typing()
		ann.typing()
		wait := every - time.Since(start) - 50*time.Millisecond
		bob.quiet("typing", "", wait)
		ann.during(100*time.Millisecond, func(f frame, b []byte) {
			if f.Type == "typing" || f.Type == "error" {
				t.Fatalf("the sender got %s", b)
			}
		})
		other.quiet("typing", "", 10*time.Millisecond)
		// After the interval, the next one goes out.
		for time.Since(start) < every {
			time.Sleep(10 * time.Millisecond)
		}
		ann.typing()
		if got := bob.awaitRaw("typing"); string(got) != `{"type":"typing","user":"ann"}` {
			t.Fatalf("second typing frame %s", got)
		}
		recent, err := n1.app.history.Recent(ctxT(t), "r", 10)
		if err != nil || len(recent) != 0 {
			t.Fatalf("history holds %d messages (%v) after typing only, want none", len(recent), err)
		}
	})
}

// A forwarded typing signal takes a token of the rate limit; one over it
// is dropped without an error.
func TestTypingRateLimited(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.Rate = 1; c.TypingInterval = time.Millisecond }) // burst 2
	ann := n.join(t, "ann", "s-ann", "r", "")
	ann.joinFrames("ann")
	bob := n.join(t, "bob", "s-bob", "r", "")
	bob.joinFrames("ann", "bob")
	ann.typing()
	bob.awaitRaw("typing")
	time.Sleep(5 * time.Millisecond) // past the typing interval
	ann.say("one")
	ann.await("message", "one")
	time.Sleep(5 * time.Millisecond)
	ann.typing() // no token left: dropped, no error
	ann.say("two")
	if f := ann.await("error", ""); f.Code != codeRateLimited {
		t.Fatalf("message after a typing signal and a message: %+v, want rate_limited", f)
	}
	bob.quiet("typing", "", 100*time.Millisecond)
}

func TestTypingFrame(t *testing.T) {
	m, err := typingEvent(`a"b`, "0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	f, own, ok := typingFrame(m.Body, "fedcba9876543210")
	if !ok || own || string(f) != `{"type":"typing","user":"a\"b"}` {
		t.Fatalf("typingFrame = %s, %v, %v", f, own, ok)
	}
	if _, own, ok := typingFrame(m.Body, "0123456789abcdef"); !ok || !own {
		t.Fatalf("own marker: own %v ok %v", own, ok)
	}
	for _, bad := range []string{`{}`, `{"type":"typing","user":"x"}`, `{"type":"typing","from":"0123456789abcdef","user":"x"}`} {
		if _, _, ok := typingFrame([]byte(bad), "0123456789abcdef"); ok {
			t.Errorf("typingFrame(%s) ok", bad)
		}
	}
}
