package routing_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/deploy"
	"github.com/chatterpro/chatterpro/internal/nginxtest"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/ssetest"
	"github.com/chatterpro/chatterpro/routing"
)

// sseNode is one node of a cluster: a consumer server and its router on a
// layer, over real HTTP. Its route is /ws/chat/{room}/ with sseEcho; the
// "session" cookie is the user's session, the X-Deny header makes Identify
// refuse.
type sseNode struct {
	srv   *consumer.Server
	hs    *httptest.Server
	layer channellayer.Layer
}

func startSSENode(t *testing.T, layer channellayer.Layer) *sseNode {
	t.Helper()
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, ReadLimit: 1024})
	if err != nil {
		t.Fatal(err)
	}
	r, err := routing.New(routing.Options{
		Server:         srv,
		AllowedOrigins: []string{"https://app.example:8443"},
		Identify: func(r *http.Request) (*consumer.User, error) {
			if r.Header.Get("X-Deny") != "" {
				return nil, errors.New("no session")
			}
			if c, err := r.Cookie("session"); err == nil {
				return &consumer.User{Name: c.Value, Session: c.Value}, nil
			}
			return nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Consumer("/ws/chat/{room}/", sseEcho)
	n := &sseNode{srv: srv, hs: httptest.NewServer(r), layer: layer}
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop shuts the node down; it may be called again.
func (n *sseNode) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	n.hs.Close()
}

func (n *sseNode) route(room string) string {
	return n.hs.URL + "/ws/chat/" + url.PathEscape(room) + "/"
}

// sseEcho refuses the room "bad" with 400, greets with the room, the user,
// and the query's keys, then echoes each frame.
func sseEcho() consumer.Consumer {
	return consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			room := c.Scope().Param("room")
			if room == "bad" {
				return consumer.Refuse(http.StatusBadRequest, "bad room")
			}
			user := "anonymous"
			if u := c.Scope().User; u != nil {
				user = u.Name
			}
			var keys []string
			for k := range c.Scope().Query {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			return c.SendJSON(map[string]any{"room": room, "user": user, "query": keys, "since": c.Scope().Query.Get("since")})
		},
		OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error { return c.Send(text) },
	}
}

func session(id string) http.Header {
	return http.Header{"Cookie": {(&http.Cookie{Name: "session", Value: id}).String()}}
}

func openSSE(t *testing.T, route string, h http.Header) *ssetest.Stream {
	t.Helper()
	st, err := ssetest.Open(ctx(t), nil, route, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func expectFrame(t *testing.T, st *ssetest.Stream, want string) {
	t.Helper()
	got, err := st.Frame(ctx(t))
	if err != nil || got != want {
		t.Fatalf("frame %q, %v; want %q", got, err, want)
	}
}

func expectStatus(t *testing.T, what string, got int, err error, want int) {
	t.Helper()
	if err != nil || got != want {
		t.Fatalf("%s: status %d, %v; want %d", what, got, err, want)
	}
}

// The websocket's route serves the fallback transport with the same Scope:
// path parameters, user, query (without "transport").
func TestSSEOnTheConsumerRoute(t *testing.T) {
	n := startSSENode(t, memoryLayer(t))
	st := openSSE(t, n.route("Chat Room")+"?since=1-0", session("ann"))
	expectFrame(t, st, `{"query":["since"],"room":"Chat Room","since":"1-0","user":"ann"}`)
	code, err := st.Send(ctx(t), `{"type":"message","text":"hi"}`)
	expectStatus(t, "POST", code, err, http.StatusNoContent)
	expectFrame(t, st, `{"type":"message","text":"hi"}`)

	ws, _, err := websocket.Dial(ctx(t), "ws"+strings.TrimPrefix(n.route("Chat Room"), "http")+"?since=1-0",
		&websocket.DialOptions{HTTPHeader: session("ann")})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if _, b, err := ws.Read(ctx(t)); err != nil || string(b) != `{"query":["since"],"room":"Chat Room","since":"1-0","user":"ann"}` {
		t.Fatalf("websocket greeting %q, %v: not the same scope", b, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// The fallback transport is refused as the websocket is, with the same
// statuses: foreign origin and Identify's refusal 403 (GET and POST alike),
// the consumer's refusal with its status.
func TestSSERefusals(t *testing.T) {
	n := startSSENode(t, memoryLayer(t))
	st := openSSE(t, n.route("r"), session("ann"))
	expectFrame(t, st, `{"query":null,"room":"r","since":"","user":"ann"}`)
	seq := uint64(1)
	cases := []struct {
		name   string
		room   string
		header http.Header
		status int // 0: accepted
	}{
		{name: "no origin (not a browser)", room: "r"},
		{name: "own origin", room: "r", header: http.Header{"Origin": {n.hs.URL}}},
		{name: "allowed origin", room: "r", header: http.Header{"Origin": {"https://app.example:8443"}}},
		{name: "foreign origin", room: "r", header: http.Header{"Origin": {"http://evil.example"}}, status: 403},
		{name: "identify refuses", room: "r", header: http.Header{"X-Deny": {"1"}}, status: 403},
		{name: "consumer refuses", room: "bad", status: 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := session("ann")
			for k, v := range tc.header {
				h[k] = v
			}
			// The websocket's answer, for comparison.
			ws, resp, err := websocket.Dial(ctx(t), "ws"+strings.TrimPrefix(n.route(tc.room), "http"), &websocket.DialOptions{HTTPHeader: h})
			wsStatus := 0
			if err == nil {
				ws.Close(websocket.StatusNormalClosure, "")
			} else if resp != nil {
				wsStatus = resp.StatusCode
			}
			other, err := ssetest.Open(ctx(t), nil, n.route(tc.room), h)
			if err == nil {
				other.Close()
			}
			if got := ssetest.Status(err); got != tc.status || wsStatus != tc.status {
				t.Fatalf("GET: %v (status %d), websocket %d; want %d", err, got, wsStatus, tc.status)
			}
			if tc.room != "r" {
				return
			}
			post := ssetest.Poster(st.Route, st.ID, h)
			frame := fmt.Sprintf(`{"seq":%d}`, seq)
			code, err := post.PostTo(ctx(t), st.Route, seq, frame)
			if want := cmpOr(tc.status, http.StatusNoContent); err != nil || code != want {
				t.Fatalf("POST: %d, %v; want %d", code, err, want)
			}
			if tc.status == 0 { // delivered: the echo comes, the next POST takes the next seq
				expectFrame(t, st, frame)
				seq++
			}
		})
	}
	t.Run("POST without ?transport=sse is 405", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, n.route("r"), strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status %d, want 405", resp.StatusCode)
		}
	})
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func memoryLayer(t *testing.T) channellayer.Layer {
	t.Helper()
	l, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// redisLayers opens n layers on the Redis at addr sharing a prefix: n
// processes of one deployment.
func redisLayers(t *testing.T, addr string, n int) []*channellayer.Redis {
	t.Helper()
	var out []*channellayer.Redis
	for i := 0; i < n; i++ {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		l, err := channellayer.NewRedis(ctx(t), c, channellayer.RedisOptions{Prefix: "ssetest", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(context.Background()) })
		out = append(out, l)
	}
	return out
}

// Two nodes on one redis-server: a stream held by A gets the frames of
// POSTs that alternate between A and B, in the order sent, even when they
// arrive out of order; B checks sessions and secrets with A; a stream that
// A closed, or whose node is gone, is 404 from B.
func TestSSEAcrossNodesOnRedis(t *testing.T) {
	rs := redistest.Start(t)
	layers := redisLayers(t, rs.Addr(), 2)
	a, b := startSSENode(t, layers[0]), startSSENode(t, layers[1])
	nodes := []*sseNode{a, b}
	st := openSSE(t, a.route("r"), session("ann"))
	expectFrame(t, st, `{"query":null,"room":"r","since":"","user":"ann"}`)

	const n = 20
	for seq := uint64(1); seq <= n; seq++ {
		code, err := st.PostTo(ctx(t), nodes[seq%2].route("r"), seq, fmt.Sprintf(`{"i":%d}`, seq), fmt.Sprintf(`{"i":%d.5}`, seq))
		expectStatus(t, fmt.Sprint("POST ", seq), code, err, http.StatusNoContent)
	}
	for seq := 1; seq <= n; seq++ {
		expectFrame(t, st, fmt.Sprintf(`{"i":%d}`, seq))
		expectFrame(t, st, fmt.Sprintf(`{"i":%d.5}`, seq))
	}
	// Out of order, across nodes: kept until their turn.
	for _, p := range []struct {
		seq  uint64
		node *sseNode
	}{{n + 3, b}, {n + 2, a}, {n + 1, b}} {
		code, err := st.PostTo(ctx(t), p.node.route("r"), p.seq, fmt.Sprintf(`{"i":%d}`, p.seq))
		expectStatus(t, fmt.Sprint("early POST ", p.seq), code, err, http.StatusNoContent)
	}
	// A repeat, through the other node, is answered and ignored.
	code, err := st.PostTo(ctx(t), b.route("r"), n+2, `{"repeat":true}`)
	expectStatus(t, "repeat", code, err, http.StatusNoContent)
	code, err = st.PostTo(ctx(t), b.route("r"), n+4, fmt.Sprintf(`{"i":%d}`, n+4))
	expectStatus(t, "POST after the repeat", code, err, http.StatusNoContent)
	for seq := n + 1; seq <= n+4; seq++ {
		expectFrame(t, st, fmt.Sprintf(`{"i":%d}`, seq))
	}

	code, err = ssetest.Poster(st.Route, st.ID, session("bob")).PostTo(ctx(t), b.route("r"), n+5, `{}`)
	expectStatus(t, "other session through B", code, err, http.StatusForbidden)
	secret, rest, _ := strings.Cut(st.ID, ".")
	forged := strings.Repeat("A", len(secret)) + "." + rest
	code, err = ssetest.Poster(st.Route, forged, session("ann")).PostTo(ctx(t), b.route("r"), n+5, `{}`)
	expectStatus(t, "wrong secret through B", code, err, http.StatusNotFound)

	// The client closes through B; then the stream is unknown on both.
	code, err = ssetest.Poster(st.Route, st.ID, session("ann")).PostBody(ctx(t), b.route("r"), "close=1000", nil)
	expectStatus(t, "close through B", code, err, http.StatusNoContent)
	if ev, err := st.Next(ctx(t)); !errors.Is(err, ssetest.ErrEnded) {
		t.Fatalf("after the client's close: %+v, %v; want the end", ev, err)
	}
	for _, node := range nodes {
		code, err = st.PostTo(ctx(t), node.route("r"), n+5, `{}`)
		expectStatus(t, "POST to a closed stream", code, err, http.StatusNotFound)
	}

	// A stream whose node is gone (its layer closed) is 404 from B, at once.
	gone := openSSE(t, a.route("r"), session("ann"))
	a.stop(t)
	if err := layers[0].Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	code, err = gone.PostTo(ctx(t), b.route("r"), 1, `{}`)
	expectStatus(t, "POST to a stream of a gone node", code, err, http.StatusNotFound)
}

// Through nginx with its default proxy buffering, events reach the client
// as they are written (the stream says X-Accel-Buffering: no), and POSTs
// reach the stream through either node behind it.
func TestSSEThroughNginx(t *testing.T) {
	conf := strings.Replace(deploy.NginxConf(), "proxy_buffering off;", "", 1)
	if strings.Contains(conf, "proxy_buffering") {
		t.Fatal("the test configuration still sets proxy_buffering")
	}
	layer := memoryLayer(t) // shared by the two nodes of this process
	a, b := startSSENode(t, layer), startSSENode(t, layer)
	ngx := nginxtest.StartOpts(t, nginxtest.Options{Workers: 1, Conf: conf},
		strings.TrimPrefix(a.hs.URL, "http://"), strings.TrimPrefix(b.hs.URL, "http://"))
	route := ngx.URL() + "/ws/chat/r/"
	// Each wait is far shorter than the keepalive interval (15 s) and
	// nginx's buffers: only an event passed on at once arrives in time.
	prompt := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t.Cleanup(cancel)
		return c
	}
	st, err := ssetest.Open(prompt(), nil, route, session("ann"))
	if err != nil {
		t.Fatalf("open through nginx: %v", err)
	}
	defer st.Close()
	if f, err := st.Frame(prompt()); err != nil || !strings.Contains(f, `"room":"r"`) {
		t.Fatalf("greeting %q, %v", f, err)
	}
	for i := 1; i <= 6; i++ { // round robin: POSTs land on both nodes
		frame := fmt.Sprintf(`{"i":%d}`, i)
		code, err := st.Send(ctx(t), frame)
		expectStatus(t, "POST through nginx", code, err, http.StatusNoContent)
		if got, err := st.Frame(prompt()); err != nil || got != frame {
			t.Fatalf("echo %q, %v; want %q promptly", got, err, frame)
		}
	}
	// nginx writes a request's log line after its response: the last may
	// come a little after its echo.
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if log := ngx.AccessLog(); strings.Count(log, "POST /ws/chat/r/?transport=sse") < 6 {
			return fmt.Errorf("nginx's access log does not show the six POSTs:\n%s", log)
		}
		return nil
	}, "nginx logging the POSTs")
}
