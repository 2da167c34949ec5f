package routing_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/routing"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// scopeEcho sends the scope's room param and user name, then echoes.
func scopeEcho() consumer.Consumer {
	return consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			// Three headers, when kept in the scope, make it refuse the
			// connection, panic or close it at once (see limitServer).
			if c.Scope().Header.Get("X-Refuse") != "" {
				return consumer.Refuse(http.StatusForbidden, "refused")
			}
			if c.Scope().Header.Get("X-Panic") != "" {
				panic("panicking in Connect, as asked")
			}
			if c.Scope().Header.Get("X-Close") != "" {
				c.Close(websocket.StatusPolicyViolation, "closed in Connect")
				return nil
			}
			name := "anonymous"
			if u := c.Scope().User; u != nil {
				name = u.Name
			}
			h := c.Scope().Header
			return c.Send([]byte(c.Scope().Param("room") + "|" + name + "|" + c.Scope().Query.Get("since") +
				"|" + h.Get("X-Kept") + "|" + h.Get("X-Not-Kept") + "|" + fmt.Sprint(len(h))))
		},
		OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error { return c.Send(text) },
	}
}

type server struct {
	srv *consumer.Server
	hs  *httptest.Server
	ws  string
}

func start(t *testing.T, opts routing.Options) *server {
	t.Helper()
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, ReadLimit: 1024})
	if err != nil {
		t.Fatal(err)
	}
	opts.Server = srv
	r, err := routing.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Consumer("/ws/chat/{room}/", scopeEcho)
	r.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("plain")) })
	hs := httptest.NewServer(r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
		layer.Close(ctx)
	})
	return &server{srv: srv, hs: hs, ws: "ws" + strings.TrimPrefix(hs.URL, "http")}
}

func ctx(t *testing.T) context.Context { return testkit.ContextWithin(t, 10*time.Second) }

func TestScopeAndEcho(t *testing.T) {
	s := start(t, routing.Options{
		Identify: func(r *http.Request) (*consumer.User, error) {
			return &consumer.User{Name: "ann", Session: "s1"}, nil
		},
		ScopeHeaders: []string{"x-kept", "X-Absent"},
	})
	ws, _, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/Chat%20Room/?since=1-0", &websocket.DialOptions{
		HTTPHeader: http.Header{"X-Kept": {"yes"}, "X-Not-Kept": {"no"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_, b, err := ws.Read(ctx(t))
	if err != nil || string(b) != "Chat Room|ann|1-0|yes||1" {
		t.Fatalf("first frame %q, %v", b, err)
	}
	ws.Write(ctx(t), websocket.MessageText, []byte("hi"))
	if _, b, err = ws.Read(ctx(t)); string(b) != "hi" {
		t.Fatalf("echo %q, %v", b, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

func TestRefusals(t *testing.T) {
	s := start(t, routing.Options{
		AllowedOrigins: []string{"https://app.example:8443"},
		Identify: func(r *http.Request) (*consumer.User, error) {
			if r.Header.Get("X-Deny") != "" {
				return nil, errors.New("no session")
			}
			return nil, nil
		},
	})
	cases := []struct {
		name   string
		origin string
		header http.Header
		status int // 0: accepted
	}{
		{name: "no origin (not a browser)"},
		{name: "own origin", origin: s.hs.URL},
		{name: "allowed origin", origin: "https://app.example:8443"},
		{name: "foreign origin", origin: "http://evil.example", status: 403},
		{name: "allowed host, other scheme", origin: "http://app.example:8443", status: 403},
		{name: "identify refuses", header: http.Header{"X-Deny": {"1"}}, status: 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h[k] = v
			}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			ws, resp, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/r/", &websocket.DialOptions{HTTPHeader: h})
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				ws.Close(websocket.StatusNormalClosure, "")
				return
			}
			if err == nil {
				ws.CloseNow()
				t.Fatal("accepted")
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("response %v, want status %d", resp, tc.status)
			}
		})
	}
	t.Run("plain GET on a websocket route is 426", func(t *testing.T) {
		resp, err := http.Get(s.hs.URL + "/ws/chat/r/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("plain GET that identify refuses is 403", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, s.hs.URL+"/ws/chat/r/", nil)
		req.Header.Set("X-Deny", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
}

// A consumer pattern ending in a slash is one path, not a subtree; the path
// without the slash is redirected to it, as ServeMux does. Escaped slashes
// and dots in a wildcard reach the consumer as they did.
func TestConsumerPatternIsExact(t *testing.T) {
	s := start(t, routing.Options{})
	cases := []struct {
		name string
		path string
		room string // the room param the consumer sees; "" means refused
		want int    // status when refused
	}{
		{name: "the route", path: "/ws/chat/r/", room: "r"},
		{name: "below the route", path: "/ws/chat/r/x", want: http.StatusNotFound},
		{name: "below the route with a slash", path: "/ws/chat/r/x/", want: http.StatusNotFound},
		{name: "no trailing slash: redirected to the route", path: "/ws/chat/r", room: "r"},
		{name: "escaped slash", path: "/ws/chat/a%2Fb/", room: "a/b"},
		{name: "dots", path: "/ws/chat/a.b/", room: "a.b"},
		{name: "escaped dot", path: "/ws/chat/%2E/", room: "."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := websocket.Dial(ctx(t), s.ws+tc.path, nil)
			if tc.room == "" {
				if err == nil {
					ws.CloseNow()
					t.Fatal("accepted")
				}
				if resp == nil || resp.StatusCode != tc.want {
					t.Fatalf("response %v, want status %d", resp, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			defer ws.CloseNow()
			if _, b, err := ws.Read(ctx(t)); err != nil || !strings.HasPrefix(string(b), tc.room+"|") {
				t.Fatalf("first frame %q, %v; want room %q", b, err, tc.room)
			}
			ws.Close(websocket.StatusNormalClosure, "")
		})
	}
}

func TestOverLimitIs1009(t *testing.T) {
	s := start(t, routing.Options{})
	ws, _, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/r/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.Read(ctx(t)) // greeting
	ws.Write(ctx(t), websocket.MessageText, []byte(strings.Repeat("x", 2048)))
	_, _, err = ws.Read(ctx(t))
	if code := websocket.CloseStatus(err); code != websocket.StatusMessageTooBig {
		t.Fatalf("close %v (%v), want 1009", code, err)
	}
}

func TestShutdownCloses1012(t *testing.T) {
	s := start(t, routing.Options{})
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		ws, _, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/r/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		ws.Read(ctx(t))
		conns = append(conns, ws)
	}
	done := make(chan error, 1)
	go func() { done <- s.srv.Shutdown(ctx(t)) }()
	for _, ws := range conns {
		_, _, err := ws.Read(ctx(t))
		if code := websocket.CloseStatus(err); code != websocket.StatusServiceRestart {
			t.Fatalf("close %v (%v), want 1012", code, err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := s.srv.Len(); n != 0 {
		t.Fatalf("%d connections left after Shutdown", n)
	}
	_, resp, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/r/", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v %v, want 503", resp, err)
	}
}

// An idle connection costs no goroutine: the server's poller watches the
// sockets, a reader runs only while bytes arrive, and the writer and the
// layer dispatcher run only while they have work.
func TestIdleConnectionsKeepNoGoroutine(t *testing.T) {
	s := start(t, routing.Options{})
	const n = 50
	before := runtime.NumGoroutine()
	var conns []*websocket.Conn
	for i := 0; i < n; i++ {
		ws, _, err := websocket.Dial(ctx(t), s.ws+"/ws/chat/r/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if _, _, err := ws.Read(ctx(t)); err != nil { // the greeting: the writer ran and stopped
			t.Fatal(err)
		}
		conns = append(conns, ws)
	}
	// The client side of a coder/websocket conn starts no goroutine while
	// it is not read; so the growth is the server's: its poller, and
	// readers, writers or handler goroutines that have not ended yet.
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if growth := runtime.NumGoroutine() - before; growth > 2 {
			return fmt.Errorf("%d idle connections keep %d goroutines, want at most 2 in all (the poller)", n, growth)
		}
		return nil
	}, "idle connections without goroutines")
	// Still served: each echoes, then goes idle again.
	for i, ws := range conns {
		msg := fmt.Sprint("still there ", i)
		if err := ws.Write(ctx(t), websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := ws.Read(ctx(t)); err != nil || string(b) != msg {
			t.Fatalf("echo %q, %v; want %q", b, err, msg)
		}
	}
	for _, ws := range conns {
		ws.Close(websocket.StatusNormalClosure, "")
	}
}

// Frames queued together go out in batches (one write per batch); the
// client still reads every frame, whole and in order.
func TestBatchedFramesArriveInOrder(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	srv, _ := consumer.NewServer(consumer.Options{Layer: layer, QueueBytes: 16 << 20})
	r, _ := routing.New(routing.Options{Server: srv})
	const n = 2000
	r.Consumer("/burst/", func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			for i := 0; i < n; i++ {
				// Sizes cross the 4 KiB write buffer now and then.
				if err := c.Send([]byte(fmt.Sprintf("%d:%s", i, strings.Repeat("x", i%5000)))); err != nil {
					return err
				}
			}
			return nil
		}}
	})
	hs := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		hs.Close()
		layer.Close(context.Background())
	})
	ws, _, err := websocket.Dial(ctx(t), "ws"+strings.TrimPrefix(hs.URL, "http")+"/burst/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	ws.Write(ctx(t), websocket.MessageText, []byte("go"))
	for i := 0; i < n; i++ {
		_, b, err := ws.Read(ctx(t))
		want := fmt.Sprintf("%d:%s", i, strings.Repeat("x", i%5000))
		if err != nil || string(b) != want {
			t.Fatalf("frame %d: %.40q (%d bytes), %v", i, b, len(b), err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}
