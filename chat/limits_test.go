package chat

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// postJoin posts the join form to base as if forwarded for xff (if not
// empty) and returns the response, its body read.
func postJoin(t *testing.T, base, xff, nickname string) (*http.Response, string) {
	t.Helper()
	form := url.Values{"nickname": {nickname}, "room": {"Chat Room"}, "room-other": {"Side Room"}}
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, base+"/join", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// metric returns the value of the sample line that starts with series
// ("name{labels}") on the node's /metrics.
func metric(t *testing.T, base, series string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return ""
}

// POST /join over --join-rate is 429 with Retry-After and the form saying
// so; other addresses join on.
func TestJoinRate(t *testing.T) {
	n := newNode(t, nil, func(c *Config) {
		c.JoinRate = 4 // one every 15 s, burst 2
		c.TrustedProxies = []string{"127.0.0.0/8", "::1"}
	})
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	for i := range 2 {
		if resp, body := postJoin(t, hs.URL, "198.51.100.1", "ada"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("join %d: %d %.200s; want 303", i+1, resp.StatusCode, body)
		}
	}
	resp, body := postJoin(t, hs.URL, "198.51.100.1", "ada")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third join: %d; want 429", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "15" && ra != "14" {
		t.Errorf("Retry-After %q; want 15 (or 14 if a second went by)", ra)
	}
	if resp.Header.Get("Set-Cookie") != "" {
		t.Error("a refused join set a cookie")
	}
	for _, want := range []string{"Too many joins from your address", "Please wait 1", `value="ada"`, `value="Side Room"`, `role="alert"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the refusal's page lacks %q:\n%s", want, body)
		}
	}
	// Another client behind the same proxy is not affected, nor is one
	// that the proxy says came through the limited one.
	if resp, _ := postJoin(t, hs.URL, "198.51.100.2", "bob"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("another address: %d; want 303", resp.StatusCode)
	}
	if resp, _ := postJoin(t, hs.URL, "198.51.100.1, 198.51.100.3", "cy"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a client forwarded by the limited address: %d; want 303", resp.StatusCode)
	}
	// A made-up X-Forwarded-For entry left of the proxy's does not help.
	if resp, _ := postJoin(t, hs.URL, "203.0.113.77, 198.51.100.1", "ada"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a spoofed entry: %d; want 429", resp.StatusCode)
	}
	for series, want := range map[string]string{
		`chatterpro_refused_total{cap="join_rate"}`:     "2",
		`chatterpro_refused_total{cap="session_conns"}`: "0",
		`chatterpro_refused_total{cap="addr_conns"}`:    "0",
	} {
		if got := metric(t, hs.URL, series); got != want {
			t.Errorf("%s = %s; want %s", series, got, want)
		}
	}
}

// Without --trusted-proxies the header is not read: the TCP peer counts.
func TestJoinRateIgnoresUntrustedHeader(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.JoinRate = 2 }) // burst 1
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	if resp, _ := postJoin(t, hs.URL, "198.51.100.1", "ada"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first join: %d; want 303", resp.StatusCode)
	}
	if resp, _ := postJoin(t, hs.URL, "198.51.100.2", "ada"); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second join from the same peer, another header: %d, Retry-After %q; want 429 with it", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestNoJoinRate(t *testing.T) {
	n := newNode(t, nil, nil)
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	for i := range 30 {
		if resp, _ := postJoin(t, hs.URL, "", "ada"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("join %d with no join rate: %d; want 303", i+1, resp.StatusCode)
		}
	}
}

// The chat's sockets count against MaxSessionConns from the handshake to
// the consumer's Disconnect.
func TestSessionConnsThroughTheChat(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.MaxSessionConns = 2 })
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	ws := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws/chat/r/"
	dial := func(nickname string, cookie *http.Cookie) (*websocket.Conn, int, string) {
		h := http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}}
		c, resp, err := websocket.Dial(ctxT(t), ws, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			return nil, resp.StatusCode, string(b)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c, 101, ""
	}
	ada := pageCookie(t, n.app.sessions, "ada")
	bob := pageCookie(t, n.app.sessions, "bob")
	a1, _, _ := dial("ada", ada)
	a2, _, _ := dial("ada", ada)
	if a1 == nil || a2 == nil {
		t.Fatal("the first two sockets of a session were refused")
	}
	if c, status, body := dial("ada", ada); c != nil || status != http.StatusTooManyRequests || !strings.Contains(body, "this session has 2 open") {
		t.Fatalf("third socket: accepted %v, %d %q; want 429", c != nil, status, body)
	}
	if c, status, body := dial("bob", bob); c == nil {
		t.Fatalf("another session: %d %q; want accepted", status, body)
	}
	if got := metric(t, hs.URL, `chatterpro_refused_total{cap="session_conns"}`); got != "1" {
		t.Fatalf("session_conns refusals %s; want 1", got)
	}
	a1.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, status, body := dial("ada", ada)
		if c != nil {
			break
		}
		if status != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after closing a socket: %d %q; want its slot back within 5 s", status, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sessions, _ := n.app.limits.conns.Held(); sessions != 2 {
		t.Fatalf("%d sessions hold slots; want 2", sessions)
	}
}

func TestLimitsConfig(t *testing.T) {
	for _, mod := range []func(*Config){
		func(c *Config) { c.MaxSessionConns = -1 },
		func(c *Config) { c.MaxAddrConns = -1 },
		func(c *Config) { c.JoinRate = -1 },
		func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/99"} },
	} {
		cfg := Config{Layer: newNode(t, nil, nil).layer, Secret: []byte("0123456789abcdef0123456789abcdef")}
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
}
