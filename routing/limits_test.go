package routing_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/routing"
)

// waitFor polls cond until it holds or 5 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s: %s", what)
		}
	}
}

func TestClientAddr(t *testing.T) {
	trusted, err := routing.NewTrustedProxies([]string{"10.0.0.0/8", " 192.168.1.1 ", "", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		proxies *routing.TrustedProxies
		peer    string
		xff     []string // X-Forwarded-For lines, in order
		want    string
	}{
		{name: "no proxies: the header is ignored", peer: "203.0.113.5:4000", xff: []string{"198.51.100.1"}, want: "203.0.113.5"},
		{name: "untrusted peer: the header is ignored", proxies: trusted, peer: "203.0.113.5:4000", xff: []string{"198.51.100.1, 10.0.0.2"}, want: "203.0.113.5"},
		{name: "trusted peer without a header", proxies: trusted, peer: "10.1.2.3:4000", want: "10.1.2.3"},
		{name: "trusted peer, one entry", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "a made-up entry left of the client is not believed", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"1.1.1.1, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "trusted chain", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"1.1.1.1, 198.51.100.1, 10.9.9.9, 192.168.1.1"}, want: "198.51.100.1"},
		{name: "trusted chain over several lines", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"1.1.1.1, 198.51.100.1", "10.9.9.9"}, want: "198.51.100.1"},
		{name: "all trusted: the leftmost", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"10.0.0.9, 192.168.1.1, 10.0.0.1"}, want: "10.0.0.9"},
		{name: "only the listed address of a bare one is trusted", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"198.51.100.1, 192.168.1.2"}, want: "192.168.1.2"},
		{name: "entries with ports", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"198.51.100.1:5555, [fd00::1]:80"}, want: "198.51.100.1"},
		{name: "garbage ends the walk at the last address", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"198.51.100.1, bogus, 10.0.0.7"}, want: "10.0.0.7"},
		{name: "empty entries are skipped", proxies: trusted, peer: "10.1.2.3:4000", xff: []string{"198.51.100.1, , 10.0.0.7,"}, want: "198.51.100.1"},
		{name: "IPv6 peer and client", proxies: trusted, peer: "[fd00::2]:4000", xff: []string{"2001:db8::1"}, want: "2001:db8::1"},
		{name: "IPv4-mapped peer counts as IPv4", proxies: trusted, peer: "[::ffff:10.0.0.1]:4000", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "not an address", proxies: trusted, peer: "pipe", xff: []string{"198.51.100.1"}, want: "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tt.proxies.ClientAddr(r).String(); got != tt.want {
				t.Fatalf("ClientAddr = %s; want %s", got, tt.want)
			}
		})
	}
}

func TestNewTrustedProxies(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "localhost", "10.0.0.0/8/8", "fe80::1%eth0"} {
		if _, err := routing.NewTrustedProxies([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: err %v; want one naming it", bad, err)
		}
	}
	tp, err := routing.NewTrustedProxies([]string{" ", ""})
	if err != nil || tp != nil {
		t.Fatalf("no CIDRs: %v, %v; want nil, nil (nothing trusted)", tp, err)
	}
	tp, err = routing.NewTrustedProxies([]string{"::ffff:10.0.0.0/104"})
	if err != nil || !tp.Trusted(netip.MustParseAddr("10.1.1.1")) || tp.Trusted(netip.MustParseAddr("11.0.0.0")) {
		t.Fatalf("an IPv4-mapped CIDR should stand for 10.0.0.0/8 (err %v)", err)
	}
}

// limitServer serves /ws/chat/{room}/ behind the given caps. The session
// is the X-Session header (none: anonymous). The consumer refuses with 403
// on "X-Refuse", panics on "X-Panic" and closes the connection in Connect
// on "X-Close".
func limitServer(t *testing.T, limits routing.ConnLimits, proxies []string) (*server, *routing.ConnCounter) {
	t.Helper()
	cc, err := routing.NewConnCounter(limits)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := routing.NewTrustedProxies(proxies)
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, routing.Options{
		Conns:   cc,
		Proxies: tp,
		Identify: func(r *http.Request) (*consumer.User, error) {
			if s := r.Header.Get("X-Session"); s != "" {
				return &consumer.User{Name: s, Session: s}, nil
			}
			return nil, nil
		},
		ScopeHeaders: []string{"X-Refuse", "X-Close", "X-Panic"},
	})
	return s, cc
}

// dialer opens websockets to s from one local address with headers.
type dialer struct {
	t      *testing.T
	s      *server
	local  string // source address, e.g. "127.0.0.2"; empty: any
	header http.Header
}

// dial opens a websocket and reads its greeting, or returns the refusal's
// status and body.
func (d dialer) dial() (ws *websocket.Conn, status int, body string) {
	d.t.Helper()
	opts := &websocket.DialOptions{HTTPHeader: d.header}
	if d.local != "" {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(d.local)}}
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: nd.DialContext, DisableKeepAlives: true}}
	}
	ws, resp, err := websocket.Dial(ctx(d.t), d.s.ws+"/ws/chat/r/", opts)
	if err != nil {
		if resp == nil {
			d.t.Fatalf("dial: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		return nil, resp.StatusCode, string(b)
	}
	d.t.Cleanup(func() { ws.CloseNow() })
	if _, _, err := ws.Read(ctx(d.t)); err != nil {
		d.t.Fatalf("greeting: %v", err)
	}
	return ws, http.StatusSwitchingProtocols, ""
}

// mustDial dials and fails the test unless the connection is accepted.
func (d dialer) mustDial() *websocket.Conn {
	d.t.Helper()
	ws, status, body := d.dial()
	if ws == nil {
		d.t.Fatalf("refused with %d %q; want accepted", status, body)
	}
	return ws
}

// mustRefuse dials and fails the test unless it is refused with 429 and
// a body containing want.
func (d dialer) mustRefuse(want string) {
	d.t.Helper()
	ws, status, body := d.dial()
	if ws != nil || status != http.StatusTooManyRequests || !strings.Contains(body, want) {
		d.t.Fatalf("dial: accepted %v, status %d, body %q; want 429 saying %q", ws != nil, status, body, want)
	}
}

func closeAll(conns []*websocket.Conn) {
	for _, ws := range conns {
		ws.Close(websocket.StatusNormalClosure, "")
	}
}

func TestSessionConnCap(t *testing.T) {
	s, cc := limitServer(t, routing.ConnLimits{PerSession: 3}, nil)
	ann := dialer{t: t, s: s, header: http.Header{"X-Session": {"ann"}}}
	bob := dialer{t: t, s: s, header: http.Header{"X-Session": {"bob"}}}
	anon := dialer{t: t, s: s}

	var anns []*websocket.Conn
	for range 3 {
		anns = append(anns, ann.mustDial())
	}
	ann.mustRefuse("this session has 3 open on this server already")
	// Others are not affected: another session, and anonymous connections
	// (no session to count).
	bobs := []*websocket.Conn{bob.mustDial(), bob.mustDial(), bob.mustDial()}
	for range 5 {
		anons := anon.mustDial()
		defer anons.CloseNow()
	}
	bob.mustRefuse("this session has 3")

	// A closed connection frees its slot, once the server has seen it go.
	anns[0].Close(websocket.StatusNormalClosure, "")
	var again *websocket.Conn
	waitFor(t, "a slot of ann's is free again after one socket closed", func() bool {
		again, _, _ = ann.dial()
		return again != nil
	})
	ann.mustRefuse("this session has 3")
	anns[0] = again

	closeAll(anns)
	closeAll(bobs)
	waitFor(t, "no session holds a slot once every socket is closed", func() bool {
		sessions, addrs := cc.Held()
		return sessions == 0 && addrs == 0
	})
	for range 3 {
		ann.mustDial()
	}
}

func TestAddrConnCap(t *testing.T) {
	t.Run("TCP peer", func(t *testing.T) {
		s, cc := limitServer(t, routing.ConnLimits{PerAddr: 2}, nil)
		one := dialer{t: t, s: s, local: "127.0.0.1"}
		two := dialer{t: t, s: s, local: "127.0.0.2"}
		conns := []*websocket.Conn{one.mustDial(), one.mustDial()}
		// Every session of the address counts, anonymous or not.
		withSession := one
		withSession.header = http.Header{"X-Session": {"cy"}}
		withSession.mustRefuse("your address has 2 open on this server already")
		one.mustRefuse("your address has 2")
		conns = append(conns, two.mustDial(), two.mustDial())
		two.mustRefuse("your address has 2")
		closeAll(conns)
		waitFor(t, "no address holds a slot once every socket is closed", func() bool {
			_, addrs := cc.Held()
			return addrs == 0
		})
		one.mustDial()
		one.mustDial()
	})
	t.Run("behind a trusted proxy", func(t *testing.T) {
		s, _ := limitServer(t, routing.ConnLimits{PerAddr: 1}, []string{"127.0.0.0/8"})
		a := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"203.0.113.1"}}}
		b := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"203.0.113.2"}}}
		aBehindB := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"203.0.113.2, 203.0.113.1"}}}
		a.mustDial()
		a.mustRefuse("your address has 1")
		aBehindB.mustRefuse("your address has 1") // the rightmost untrusted entry counts
		b.mustDial()
	})
	t.Run("IPv6 by its /64", func(t *testing.T) {
		s, _ := limitServer(t, routing.ConnLimits{PerAddr: 1}, []string{"127.0.0.0/8"})
		a := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"2001:db8:1:2::1"}}}
		sameNet := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"2001:db8:1:2:ffff::9"}}}
		otherNet := dialer{t: t, s: s, header: http.Header{"X-Forwarded-For": {"2001:db8:1:3::1"}}}
		a.mustDial()
		sameNet.mustRefuse("your address has 1")
		otherNet.mustDial()
	})
}

// A connection that its consumer refuses, closes or panics in during
// Connect gives its slot back: the consumer's Disconnect never runs for it.
func TestRefusedConnectionsFreeTheirSlot(t *testing.T) {
	s, cc := limitServer(t, routing.ConnLimits{PerSession: 1, PerAddr: 1}, nil)
	for _, h := range []string{"X-Refuse", "X-Close", "X-Panic"} {
		d := dialer{t: t, s: s, header: http.Header{"X-Session": {"ann"}, h: {"1"}}}
		for range 3 {
			if ws, status, body := d.dial(); ws != nil || status == http.StatusTooManyRequests {
				t.Fatalf("%s: accepted %v, status %d %q; want refused, and never with 429 (a slot leaked)", h, ws != nil, status, body)
			}
		}
	}
	waitFor(t, "no slot is held", func() bool {
		sessions, addrs := cc.Held()
		return sessions == 0 && addrs == 0
	})
	dialer{t: t, s: s, header: http.Header{"X-Session": {"ann"}}}.mustDial()
}

func TestConnCounter(t *testing.T) {
	if _, err := routing.NewConnCounter(routing.ConnLimits{PerSession: -1}); err == nil {
		t.Fatal("a negative cap was accepted")
	}
	cc, err := routing.NewConnCounter(routing.ConnLimits{PerSession: 1, PerAddr: 2})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("198.51.100.1")
	r1, err := cc.Acquire("s", a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Acquire("s", netip.MustParseAddr("198.51.100.2")); !errors.Is(err, routing.ErrSessionConns) {
		t.Fatalf("second of the session: %v; want ErrSessionConns", err)
	}
	r2, err := cc.Acquire("t", a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Acquire("u", a); !errors.Is(err, routing.ErrAddrConns) {
		t.Fatalf("third of the address: %v; want ErrAddrConns", err)
	}
	// A refusal takes nothing: u was refused for its address, not counted.
	if sessions, addrs := cc.Held(); sessions != 2 || addrs != 1 {
		t.Fatalf("held %d sessions, %d addresses; want 2, 1", sessions, addrs)
	}
	if s, a := cc.Refused(); s != 1 || a != 1 {
		t.Fatalf("refused %d for the session, %d for the address; want 1, 1", s, a)
	}
	r1()
	r1() // a second release does nothing
	if _, err := cc.Acquire("u", a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r2()
	// Zero caps count nothing.
	off, _ := routing.NewConnCounter(routing.ConnLimits{})
	for range 100 {
		if _, err := off.Acquire("s", a); err != nil {
			t.Fatal(err)
		}
	}
	if sessions, addrs := off.Held(); sessions != 0 || addrs != 0 {
		t.Fatalf("with no caps: held %d, %d; want nothing counted", sessions, addrs)
	}
}

func TestAddrLimiter(t *testing.T) {
	if _, err := routing.NewAddrLimiter(0); err == nil {
		t.Fatal("0 per minute was accepted")
	}
	l, err := routing.NewAddrLimiter(10) // one every 6 s, burst 5
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	routing.SetClock(l, func() time.Time { return now })
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	for i := range 5 {
		if ok, _ := l.Allow(a); !ok {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow(a)
	if ok || wait != 6*time.Second {
		t.Fatalf("sixth: ok %v, retry after %v; want refused, 6s", ok, wait)
	}
	if ok, _ := l.Allow(b); !ok {
		t.Fatal("another address was limited")
	}
	now = now.Add(2 * time.Second)
	if ok, wait := l.Allow(a); ok || wait != 4*time.Second {
		t.Fatalf("2 s later: ok %v, retry after %v; want refused, 4s", ok, wait)
	}
	now = now.Add(4 * time.Second)
	if ok, _ := l.Allow(a); !ok {
		t.Fatal("refused once the retry time had passed")
	}
	if ok, _ := l.Allow(a); ok {
		t.Fatal("a second event within 6 s was allowed")
	}
	if n := l.Refused(); n != 3 {
		t.Fatalf("refused %d; want 3", n)
	}
	if ok, _ := l.Allow(netip.Addr{}); !ok {
		t.Fatal("the zero Addr (unknown) was limited")
	}

	// Idle addresses are forgotten once their bucket is full again, in a
	// sweep at most once per fill time (30 s: the first Allow swept at
	// t=0), so the map does not keep every address it ever saw.
	for i := range 1000 { // t=6s
		l.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	if n := l.Len(); n != 1002 {
		t.Fatalf("holding %d addresses; want 1002", n)
	}
	now = now.Add(23 * time.Second) // t=29s: no sweep yet
	l.Allow(b)
	if n := l.Len(); n != 1002 {
		t.Fatalf("at 29 s, holding %d addresses; want all 1002 (no sweep before 30 s)", n)
	}
	now = now.Add(time.Second) // t=30s: the 1000 are full again, a and b are not
	l.Allow(b)
	if n := l.Len(); n != 2 {
		t.Fatalf("at 30 s, holding %d addresses; want 2 (a and b, still used)", n)
	}
	// a's bucket, empty at 6 s, holds 4 again: kept, it allows 4, not 5.
	allowed := 0
	for range 5 {
		if ok, _ := l.Allow(a); ok {
			allowed++
		}
	}
	if allowed != 4 {
		t.Fatalf("a was allowed %d of 5 at 30 s; want 4 (a sweep must keep a bucket that is not full)", allowed)
	}
	now = now.Add(31 * time.Second) // t=61s: every bucket full
	l.Allow(netip.MustParseAddr("198.51.100.3"))
	if n := l.Len(); n != 1 {
		t.Fatalf("at 61 s, holding %d addresses; want 1 (the one just seen)", n)
	}
}
