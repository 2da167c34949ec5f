package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/ssetest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// ackCutter is a TCP proxy in front of a node that can swallow everything
// the node sends (acknowledgements included) while passing on what the
// client sends, and then cut its connections: a client whose message
// reached the server but whose acknowledgement was lost with the
// connection.
type ackCutter struct {
	ln      net.Listener
	target  string
	swallow atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startAckCutter(t *testing.T, target string) *ackCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ackCutter{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL returns "http://" and the proxy's address.
func (p *ackCutter) URL() string { return "http://" + p.ln.Addr().String() }

func (p *ackCutter) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { // client to node: always passed on
			defer p.wg.Done()
			_, _ = io.Copy(up, c)
			up.Close()
			c.Close()
		}()
		go func() { // node to client: dropped while swallowing
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 && !p.swallow.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						err = werr
					}
				}
				if err != nil {
					up.Close()
					c.Close()
					return
				}
			}
		}()
	}
}

// cut closes every connection through the proxy.
func (p *ackCutter) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (p *ackCutter) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// chatRoute is the chat's consumer route of room on base.
func chatRoute(base, room string) string { return base + "/ws/chat/" + url.PathEscape(room) + "/" }

// sseFrames reads the stream's message frames until one matches, and
// returns it.
func sseFrames(ctx context.Context, s *ssetest.Stream, match func(testnode.Frame) bool) (testnode.Frame, error) {
	for {
		data, err := s.Frame(ctx)
		if err != nil {
			return testnode.Frame{}, err
		}
		var f testnode.Frame
		if err := json.Unmarshal([]byte(data), &f); err != nil {
			return testnode.Frame{}, err
		}
		f.Raw = json.RawMessage(data)
		if match(f) {
			return f, nil
		}
	}
}

// waitClosed waits up to d for ch to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

// countCID returns how many message frames with cid c has received.
func countCID(c *testnode.Client, cid string) int {
	n := 0
	for _, f := range c.Received() {
		if f.Type == "message" && f.CID == cid {
			n++
		}
	}
	return n
}

// TestResendAfterLostAck: a message with a cid reaches the server, which
// records it and sends it to the room, but its acknowledgement is lost with
// the sender's connection. The sender reconnects, to the same node or to
// the other one, over a websocket or the fallback, and sends it again with
// the same cid: it gets the original back (same ID), and the room's history
// and every other member's view (watchers on both nodes, on websockets and
// on the fallback) hold it once.
func TestResendAfterLostAck(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	opts := testnode.Options{Layer: "redis://" + rs.Addr() + "/0"}
	nodes := []*testnode.Node{testnode.Start(t, opts), testnode.Start(t, opts)}
	cl := &lbCluster{redis: rs}
	ctx := timeout(t, 90*time.Second)
	const room = "Resend Room"
	// Watchers on each node, and one on the fallback.
	bob := connect(ctx, t, nodes[0].URL(), "Bob", room)
	carol := connect(ctx, t, nodes[1].URL(), "Carol", room)
	eveJoin, err := testnode.Join(ctx, nodes[1].URL(), "Eve", room)
	if err != nil {
		t.Fatal(err)
	}
	eve, err := ssetest.Open(ctx, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, chatRoute(nodes[1].URL(), room),
		http.Header{"Cookie": {(&http.Cookie{Name: eveJoin.Cookie.Name, Value: eveJoin.Cookie.Value}).String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer eve.Close()

	for _, tc := range []struct {
		name      string
		sse       bool
		resendOn  int // index of the node the resend goes to; the first send goes to node 0
		sender    string
		cid, text string
	}{
		{"websocket same node", false, 0, "Sam", "ws-same-0001", "lost ack, websocket, same node"},
		{"websocket other node", false, 1, "Sue", "ws-other-0002", "lost ack, websocket, other node"},
		{"sse same node", true, 0, "Sid", "sse-same-0003", "lost ack, fallback, same node"},
		{"sse other node", true, 1, "Sal", "sse-other-0004", "lost ack, fallback, other node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := `{"type":"message","text":` + jsString(tc.text) + `,"cid":"` + tc.cid + `"}`
			proxy := startAckCutter(t, nodes[0].Addr())
			sender, err := testnode.Join(ctx, nodes[0].URL(), tc.sender, room)
			if err != nil {
				t.Fatal(err)
			}
			cookie := http.Header{"Cookie": {(&http.Cookie{Name: sender.Cookie.Name, Value: sender.Cookie.Value}).String()}}
			noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

			// The first send, through the proxy to node 0; the proxy
			// swallows the acknowledgement, then cuts the connection.
			var since string
			var sseLost *ssetest.Stream
			if tc.sse {
				s, err := ssetest.Open(ctx, noKeepAlive, chatRoute(proxy.URL(), room), cookie)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				h, err := sseFrames(ctx, s, func(f testnode.Frame) bool { return f.Type == "history" })
				if err != nil {
					t.Fatal(err)
				}
				if n := len(h.Messages); n > 0 {
					since = h.Messages[n-1].ID
				}
				if _, err := sseFrames(ctx, s, func(f testnode.Frame) bool { return f.Type == "notice" }); err != nil {
					t.Fatal(err)
				}
				proxy.swallow.Store(true)
				// The POST goes to the node itself (any node would do): only
				// the stream, which carries the acknowledgement, is cut.
				if code, err := s.PostTo(ctx, chatRoute(nodes[0].URL(), room), 1, frame); err != nil || code != http.StatusNoContent {
					t.Fatalf("POST: %d, %v", code, err)
				}
				sseLost = s
			} else {
				if err := sender.DialTo(ctx, proxy.URL(), ""); err != nil {
					t.Fatal(err)
				}
				h, err := sender.Await(ctx, "history", nil)
				if err != nil {
					t.Fatal(err)
				}
				if n := len(h.Messages); n > 0 {
					since = h.Messages[n-1].ID
				}
				if _, err := sender.Await(ctx, "notice", nil); err != nil {
					t.Fatal(err)
				}
				proxy.swallow.Store(true)
				if err := sender.SendRaw(ctx, []byte(frame)); err != nil {
					t.Fatal(err)
				}
			}
			// Recorded and sent to the room...
			var orig testnode.Frame
			testkit.Eventually(t, 10*time.Second, func() bool {
				for _, f := range bob.Received() {
					if f.CID == tc.cid {
						orig = f
						return true
					}
				}
				return false
			}, "the message reaches Bob")
			// ...but the sender never hears of it: the connection is cut.
			proxy.cut()
			if tc.sse {
				waitClosed(t, sseLost.Done(), 10*time.Second, "the cut stream ends")
				for {
					ev, err := sseLost.Next(ctx)
					if errors.Is(err, ssetest.ErrEnded) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if strings.Contains(ev.Data, tc.cid) {
						t.Fatalf("the acknowledgement got through: %s", ev.Data)
					}
				}
			} else {
				waitClosed(t, sender.Done(), 10*time.Second, "the cut websocket ends")
				if n := countCID(sender, tc.cid); n != 0 {
					t.Fatalf("the acknowledgement got through (%d times)", n)
				}
			}

			// The resend on a new connection, resuming from before the
			// message, with the same cid, then a marker after it.
			target := nodes[tc.resendOn].URL()
			marker := `{"type":"message","text":"after ` + tc.cid + `","cid":"m-` + tc.cid + `"}`
			var again testnode.Frame
			if tc.sse {
				route := chatRoute(target, room)
				if since != "" {
					route += "?since=" + url.QueryEscape(since)
				}
				s, err := ssetest.Open(ctx, noKeepAlive, route, cookie)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if _, err := sseFrames(ctx, s, func(f testnode.Frame) bool { return f.Type == "notice" }); err != nil {
					t.Fatal(err)
				}
				if code, err := s.Send(ctx, frame); err != nil || code != http.StatusNoContent {
					t.Fatalf("POST of the resend: %d, %v", code, err)
				}
				if again, err = sseFrames(ctx, s, func(f testnode.Frame) bool { return f.Type == "message" && f.CID == tc.cid }); err != nil {
					t.Fatal(err)
				}
				if code, err := s.Send(ctx, marker); err != nil || code != http.StatusNoContent {
					t.Fatalf("POST of the marker: %d, %v", code, err)
				}
				defer s.PostClose(ctx, 1000)
			} else {
				if err := sender.DialTo(ctx, target, since); err != nil {
					t.Fatal(err)
				}
				defer sender.Close(websocket.StatusNormalClosure)
				if _, err := sender.Await(ctx, "notice", nil); err != nil {
					t.Fatal(err)
				}
				if err := sender.SendRaw(ctx, []byte(frame)); err != nil {
					t.Fatal(err)
				}
				if again, err = sender.Await(ctx, "message", func(f testnode.Frame) bool { return f.CID == tc.cid }); err != nil {
					t.Fatal(err)
				}
				if err := sender.SendRaw(ctx, []byte(marker)); err != nil {
					t.Fatal(err)
				}
			}
			if again.ID != orig.ID || again.Text != tc.text || again.User != tc.sender {
				t.Errorf("the resend got %s; want the original %s", again, orig)
			}

			// The watchers get the marker after anything the resend could
			// have caused: by then each has the message exactly once.
			for _, w := range []*testnode.Client{bob, carol} {
				testkit.Eventually(t, 10*time.Second, func() bool { return countCID(w, "m-"+tc.cid) == 1 }, w.Nickname+" gets the marker")
				if n := countCID(w, tc.cid); n != 1 {
					t.Errorf("%s got the message %d times; want once", w.Nickname, n)
				}
			}
			// Eve, on the fallback, likewise: her frames up to the marker.
			n := 0
			for {
				f, err := sseFrames(ctx, eve, func(f testnode.Frame) bool { return f.Type == "message" })
				if err != nil {
					t.Fatalf("Eve: %v", err)
				}
				if f.CID == "m-"+tc.cid {
					break
				}
				if f.CID == tc.cid {
					n++
				}
			}
			if n != 1 {
				t.Errorf("Eve (fallback) got the message %d times; want once", n)
			}
			xs, err := cl.historyEntries(room)
			if err != nil {
				t.Fatal(err)
			}
			n = 0
			for _, x := range xs {
				if d, _ := x.Values["d"].(string); strings.Contains(d, `"cid":"`+tc.cid+`"`) {
					n++
					if x.ID != orig.ID {
						t.Errorf("history entry %s holds the message; want %s", x.ID, orig.ID)
					}
				}
			}
			if n != 1 {
				t.Errorf("the room's history holds the message %d times; want once", n)
			}
		})
	}
	// A newcomer's history agrees.
	dave := connect(ctx, t, nodes[1].URL(), "Dave", room)
	seen := map[string]int{}
	for _, m := range dave.Received()[0].Messages {
		seen[m.CID]++
	}
	for _, cid := range []string{"ws-same-0001", "ws-other-0002", "sse-same-0003", "sse-other-0004"} {
		if seen[cid] != 1 {
			t.Errorf("Dave's history has the message %s %d times; want once", cid, seen[cid])
		}
	}
}
