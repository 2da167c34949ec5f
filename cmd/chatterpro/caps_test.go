package main_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/nginxtest"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// capDial opens the room's websocket at base with the session cookie and
// extra headers, from the local address local ("" for any). It returns the
// open connection (closed when the test ends), or the status and body of
// the refusal.
func capDial(ctx context.Context, t *testing.T, base, local string, c *testnode.Client, header http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Add("Cookie", (&http.Cookie{Name: c.Cookie.Name, Value: c.Cookie.Value}).String())
	d := &net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	ws, resp, err := websocket.Dial(ctx, testnode.WebsocketURL(base, c.Room, ""), &websocket.DialOptions{
		HTTPHeader: h,
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}},
	})
	if err != nil {
		if resp == nil {
			t.Fatalf("dialing %s from %q: %v", base, local, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(b)
	}
	t.Cleanup(func() { ws.CloseNow() })
	if _, b, err := ws.Read(ctx); err != nil || !strings.HasPrefix(string(b), `{"type":"history"`) {
		t.Fatalf("first frame %.80s, %v; want history", b, err)
	}
	return ws, http.StatusSwitchingProtocols, ""
}

// mustAccept and mustRefuse429 check one capDial.
func mustAccept(ctx context.Context, t *testing.T, base, local string, c *testnode.Client, h http.Header) *websocket.Conn {
	t.Helper()
	ws, status, body := capDial(ctx, t, base, local, c, h)
	if ws == nil {
		t.Fatalf("%s from %q %v: refused with %d %q; want accepted", c.Nickname, local, h, status, body)
	}
	return ws
}

func mustRefuse429(ctx context.Context, t *testing.T, base, local string, c *testnode.Client, h http.Header, want string) {
	t.Helper()
	ws, status, body := capDial(ctx, t, base, local, c, h)
	if ws != nil || status != http.StatusTooManyRequests || !strings.Contains(body, want) {
		t.Fatalf("%s from %q %v: accepted %v, %d %q; want 429 saying %q", c.Nickname, local, h, ws != nil, status, body, want)
	}
}

// postJoin posts the join form to base with extra headers; it returns the
// status and Retry-After.
func postJoin(ctx context.Context, t *testing.T, base string, h http.Header) (int, string, string) {
	t.Helper()
	form := url.Values{"nickname": {"joiner"}, "room": {"Chat Room"}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/join", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := (&http.Transport{DisableKeepAlives: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

func xff(a string) http.Header { return http.Header{"X-Forwarded-For": {a}} }

// With the defaults a session holds at most 10 sockets on a node; the
// 11th is refused with 429 before the upgrade, another session is not
// affected, and a closed socket frees its slot.
func TestSessionCapDefault(t *testing.T) {
	ctx := timeout(t, 60*time.Second)
	n := testnode.Start(t, testnode.Options{})
	ada, err := testnode.Join(ctx, n.URL(), "ada", "Chat Room")
	if err != nil {
		t.Fatal(err)
	}
	var tabs []*websocket.Conn
	for range 10 {
		tabs = append(tabs, mustAccept(ctx, t, n.URL(), "", ada, nil))
	}
	mustRefuse429(ctx, t, n.URL(), "", ada, nil, "this session has 10 open on this server already")
	bob := connect(ctx, t, n.URL(), "bob", "Chat Room")
	if err := bob.Send(ctx, "still here"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "still here" }); err != nil {
		t.Fatalf("bob's chat beside ada's capped session: %v", err)
	}
	tabs[0].Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, status, body := capDial(ctx, t, n.URL(), "", ada, nil)
		if ws != nil {
			break
		}
		if status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after a tab closed: %d %q; want its slot back within 5 s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustRefuse429(ctx, t, n.URL(), "", ada, nil, "this session has 10")
}

// The caps read from the environment: sockets and joins per client
// address, the address taken from X-Forwarded-For of a trusted proxy, and
// CHATTERPRO_MAX_SESSION_CONNS=0 turning the session cap off.
func TestAddrCapsFromEnv(t *testing.T) {
	ctx := timeout(t, 60*time.Second)
	n := testnode.Start(t, testnode.Options{Env: []string{
		"CHATTERPRO_MAX_SESSION_CONNS=0",
		"CHATTERPRO_MAX_ADDR_CONNS=2",
		"CHATTERPRO_JOIN_RATE=2", // one every 30 s, burst 1
		"CHATTERPRO_TRUSTED_PROXIES=127.0.0.1/32",
	}})
	status, _, body := postJoin(ctx, t, n.URL(), xff("198.51.100.1"))
	if status != http.StatusSeeOther {
		t.Fatalf("first join: %d %.200s; want 303", status, body)
	}
	status, retry, body := postJoin(ctx, t, n.URL(), xff("198.51.100.1"))
	if status != http.StatusTooManyRequests || (retry != "30" && retry != "29") || !strings.Contains(body, "Too many joins from your address") {
		t.Fatalf("second join: %d, Retry-After %q, %.300s; want 429, 30, the form saying why", status, retry, body)
	}
	if status, _, _ := postJoin(ctx, t, n.URL(), xff("198.51.100.2")); status != http.StatusSeeOther {
		t.Fatalf("a join from another address: %d; want 303", status)
	}

	ada, err := testnode.Join(ctx, n.URL(), "ada", "Chat Room") // from 127.0.0.1 itself: its own budget
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(ctx, t, n.URL(), "", ada, xff("198.51.100.1"))
	mustAccept(ctx, t, n.URL(), "", ada, xff("198.51.100.1"))
	mustRefuse429(ctx, t, n.URL(), "", ada, xff("198.51.100.1"), "your address has 2 open on this server already")
	// Not capped per session: 12 sockets of ada's from six addresses.
	for i := 2; i <= 6; i++ {
		a := "198.51.100." + strconv.Itoa(i)
		mustAccept(ctx, t, n.URL(), "", ada, xff(a))
		mustAccept(ctx, t, n.URL(), "", ada, xff(a))
	}
}

// Behind the shipped deploy/nginx.conf, with --trusted-proxies naming
// nginx, a node caps each client's own address: nginx appends the address
// it got the request from, and what a client writes into X-Forwarded-For
// itself does not help it.
func TestAddrCapBehindNginx(t *testing.T) {
	ctx := timeout(t, 60*time.Second)
	n := testnode.Start(t, testnode.Options{Args: []string{"--trusted-proxies", "127.0.0.1", "--max-addr-conns", "2"}})
	ng := nginxtest.Start(t, n.Addr())
	ada, err := testnode.Join(ctx, ng.URL(), "ada", "Chat Room")
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(ctx, t, ng.URL(), "127.0.0.2", ada, nil)
	mustAccept(ctx, t, ng.URL(), "127.0.0.2", ada, xff("198.51.100.7"))
	mustRefuse429(ctx, t, ng.URL(), "127.0.0.2", ada, nil, "your address has 2")
	mustRefuse429(ctx, t, ng.URL(), "127.0.0.2", ada, xff("198.51.100.8"), "your address has 2")
	mustAccept(ctx, t, ng.URL(), "127.0.0.3", ada, nil)
	mustAccept(ctx, t, ng.URL(), "127.0.0.3", ada, nil)
}
