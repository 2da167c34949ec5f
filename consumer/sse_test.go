package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/ssetest"
)

// sseServer serves a consumer over the fallback transport on a memory
// layer. The "X-Session" header stands for the session a router would
// find (see routing.Options.Identify).
type sseServer struct {
	srv    *consumer.Server
	hs     *httptest.Server
	route  string
	closed chan consumer.StatusCode // the code of each Disconnect
}

func serveSSE(t *testing.T, opts consumer.Options, f func() consumer.Consumer) *sseServer {
	t.Helper()
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Layer = layer
	srv, err := consumer.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &sseServer{srv: srv, closed: make(chan consumer.StatusCode, 16)}
	user := func(r *http.Request) *consumer.User {
		if id := r.Header.Get("X-Session"); id != "" {
			return &consumer.User{Name: id, Session: id}
		}
		return nil
	}
	s.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			srv.ServeSSEPost(w, r, user(r))
			return
		}
		cons := f()
		wrapped := consumer.Funcs{
			OnConnect: cons.Connect,
			OnReceive: cons.Receive,
			OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) {
				cons.Disconnect(ctx, c, code)
				s.closed <- code
			},
		}
		srv.ServeSSE(w, r, consumer.Scope{Path: r.URL.Path, Query: r.URL.Query(), User: user(r)}, wrapped)
	}))
	s.route = s.hs.URL + "/sse/"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		s.hs.Close()
		layer.Close(ctx)
	})
	return s
}

// open opens a stream as session (empty: anonymous), closed at the end.
func (s *sseServer) open(t *testing.T, session string) *ssetest.Stream {
	t.Helper()
	h := http.Header{}
	if session != "" {
		h.Set("X-Session", session)
	}
	st, err := ssetest.Open(timeout(t), nil, s.route, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// disconnected waits for the next Disconnect and returns its code.
func (s *sseServer) disconnected(t *testing.T) consumer.StatusCode {
	t.Helper()
	select {
	case code := <-s.closed:
		return code
	case <-timeout(t).Done():
		t.Fatal("no Disconnect")
		return 0
	}
}

// echo greets, then echoes each frame; the frame "close" closes with 1008.
func echo() consumer.Consumer {
	return consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return c.Send([]byte(`{"type":"hello","since":"` + c.Scope().Query.Get("since") + `"}`))
		},
		OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			if string(text) == `"close"` {
				c.Close(consumer.StatusPolicy, "too many errors")
				return nil
			}
			return c.Send(text)
		},
	}
}

func expectSSEFrame(t *testing.T, st *ssetest.Stream, want string) {
	t.Helper()
	got, err := st.Frame(timeout(t))
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

// A consumer over the fallback transport receives and sends frames, the
// first event names the stream, and a frame with line breaks arrives whole.
func TestSSEReceivesAndSends(t *testing.T) {
	s := serveSSE(t, consumer.Options{}, echo)
	st := s.open(t, "ann")
	if len(st.ID) < 22+4 {
		t.Fatalf("stream ID %q is too short to hold 128 random bits and a route", st.ID)
	}
	expectSSEFrame(t, st, `{"type":"hello","since":""}`)
	n, err := st.Send(timeout(t), `{"n":1}`, `{"n":2}`)
	expectStatus(t, "POST", n, err, http.StatusNoContent)
	n, err = st.Send(timeout(t), `"line one\nline two"`, `{"n":3}`)
	expectStatus(t, "POST", n, err, http.StatusNoContent)
	for _, want := range []string{`{"n":1}`, `{"n":2}`, `"line one\nline two"`, `{"n":3}`} {
		expectSSEFrame(t, st, want)
	}
	// A frame with raw line breaks (consumers may send any text).
	s2 := serveSSE(t, consumer.Options{}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return c.Send([]byte("a\nb\r\nc\rd\n"))
		}}
	})
	expectSSEFrame(t, s2.open(t, ""), "a\nb\nc\nd\n")
}

// Two streams of one server get different IDs, and a query (since) reaches
// the consumer's scope.
func TestSSEStreamIDsDiffer(t *testing.T) {
	s := serveSSE(t, consumer.Options{}, echo)
	a, b := s.open(t, "ann"), s.open(t, "ann")
	if a.ID == b.ID {
		t.Fatalf("two streams share the ID %q", a.ID)
	}
	st, err := ssetest.Open(timeout(t), nil, s.route+"?since=5-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	expectSSEFrame(t, st, `{"type":"hello","since":"5-1"}`)
}

// POSTs are applied in seq order whatever order they arrive in; a repeat
// is answered 204 and not applied again; bad requests are refused.
func TestSSEPostOrder(t *testing.T) {
	s := serveSSE(t, consumer.Options{}, echo)
	st := s.open(t, "ann")
	expectSSEFrame(t, st, `{"type":"hello","since":""}`)
	for _, seq := range []uint64{3, 2} { // early: kept until 1 comes
		n, err := st.PostTo(timeout(t), st.Route, seq, fmt.Sprintf(`{"seq":%d}`, seq))
		expectStatus(t, fmt.Sprint("early POST ", seq), n, err, http.StatusNoContent)
	}
	n, err := st.PostTo(timeout(t), st.Route, 1, `{"seq":1}`)
	expectStatus(t, "POST 1", n, err, http.StatusNoContent)
	for seq := 1; seq <= 3; seq++ {
		expectSSEFrame(t, st, fmt.Sprintf(`{"seq":%d}`, seq))
	}
	n, err = st.PostTo(timeout(t), st.Route, 2, `{"seq":"2 again"}`)
	expectStatus(t, "repeated POST 2", n, err, http.StatusNoContent)
	n, err = st.PostTo(timeout(t), st.Route, 4, `{"seq":4}`)
	expectStatus(t, "POST 4", n, err, http.StatusNoContent)
	expectSSEFrame(t, st, `{"seq":4}`) // not the repeat
	n, err = st.PostTo(timeout(t), st.Route, 100, `{}`)
	expectStatus(t, "POST far ahead", n, err, http.StatusTooManyRequests)

	bad := []struct{ name, extra, body string }{
		{"not JSON", "", `{"seq":5,"frames":[`},
		{"seq 0", "", `{"seq":0,"frames":[{}]}`},
		{"no seq", "", `{"frames":[{}]}`},
		{"bad close code", "close=1012", ""},
		{"close code not a number", "close=x", ""},
	}
	for _, tc := range bad {
		n, err := st.PostBody(timeout(t), st.Route, tc.extra, []byte(tc.body))
		expectStatus(t, tc.name, n, err, http.StatusBadRequest)
	}
}

// A POST must carry the stream's session and its secret; an unknown or
// closed stream is 404.
func TestSSEPostRefusals(t *testing.T) {
	s := serveSSE(t, consumer.Options{}, echo)
	st := s.open(t, "ann")
	expectSSEFrame(t, st, `{"type":"hello","since":""}`)

	n, err := ssetest.Poster(st.Route, st.ID, http.Header{"X-Session": {"bob"}}).PostTo(timeout(t), st.Route, 1, `{}`)
	expectStatus(t, "other session", n, err, http.StatusForbidden)
	n, err = ssetest.Poster(st.Route, st.ID, nil).PostTo(timeout(t), st.Route, 1, `{}`)
	expectStatus(t, "anonymous", n, err, http.StatusForbidden)

	secret, rest, _ := strings.Cut(st.ID, ".")
	n, err = ssetest.Poster(st.Route, strings.Repeat("A", len(secret))+"."+rest, st.Header).PostTo(timeout(t), st.Route, 1, `{}`)
	expectStatus(t, "wrong secret", n, err, http.StatusNotFound)
	n, err = ssetest.Poster(st.Route, "garbage", st.Header).PostTo(timeout(t), st.Route, 1, `{}`)
	expectStatus(t, "malformed ID", n, err, http.StatusNotFound)

	// Nothing of the refused POSTs reached the consumer.
	n, err = st.Send(timeout(t), `{"n":"first"}`)
	expectStatus(t, "POST", n, err, http.StatusNoContent)
	expectSSEFrame(t, st, `{"n":"first"}`)

	n, err = st.PostClose(timeout(t), 1000)
	expectStatus(t, "close", n, err, http.StatusNoContent)
	if code := s.disconnected(t); code != consumer.StatusNormal {
		t.Fatalf("Disconnect code %d, want 1000", code)
	}
	n, err = st.Send(timeout(t), `{}`)
	expectStatus(t, "POST after close", n, err, http.StatusNotFound)
}

// A close reaches the client as the close event with its code and reason,
// and the response ends after it.
func TestSSECloseEvent(t *testing.T) {
	t.Run("consumer closes: 1008", func(t *testing.T) {
		s := serveSSE(t, consumer.Options{}, echo)
		st := s.open(t, "ann")
		n, err := st.Send(timeout(t), `{"n":1}`, `"close"`, `{"n":2}`)
		expectStatus(t, "POST", n, err, http.StatusNoContent)
		expectSSEFrame(t, st, `{"type":"hello","since":""}`)
		expectSSEFrame(t, st, `{"n":1}`)
		expectClose(t, st, consumer.StatusPolicy, "too many errors")
		if code := s.disconnected(t); code != consumer.StatusPolicy {
			t.Fatalf("Disconnect code %d, want 1008", code)
		}
	})
	t.Run("frame over the read limit: 413 and 1009", func(t *testing.T) {
		s := serveSSE(t, consumer.Options{ReadLimit: 100}, echo)
		st := s.open(t, "ann")
		// The frame Connect sent is read first: a 1009 close drops what is
		// still queued (as a websocket's does), and the stream is open,
		// and takes POSTs, before Connect has run.
		expectSSEFrame(t, st, `{"type":"hello","since":""}`)
		n, err := st.Send(timeout(t), `"`+strings.Repeat("x", 200)+`"`)
		expectStatus(t, "POST", n, err, http.StatusRequestEntityTooLarge)
		expectClose(t, st, consumer.StatusTooBig, "frame too big")
		if code := s.disconnected(t); code != consumer.StatusTooBig {
			t.Fatalf("Disconnect code %d, want 1009", code)
		}
	})
	t.Run("body over the limit: 413 and 1009", func(t *testing.T) {
		s := serveSSE(t, consumer.Options{ReadLimit: 100}, echo)
		st := s.open(t, "ann")
		frames := make([]string, 20)
		for i := range frames {
			frames[i] = `"` + strings.Repeat("x", 90) + `"`
		}
		n, err := st.Send(timeout(t), frames...)
		expectStatus(t, "POST", n, err, http.StatusRequestEntityTooLarge)
		expectClose(t, st, consumer.StatusTooBig, "frame too big")
	})
	t.Run("shutdown: 1012", func(t *testing.T) {
		s := serveSSE(t, consumer.Options{}, echo)
		a, b := s.open(t, "ann"), s.open(t, "bob")
		done := make(chan error, 1)
		go func() { done <- s.srv.Shutdown(timeout(t)) }()
		expectClose(t, a, consumer.StatusServiceRestart, "server restarting")
		expectClose(t, b, consumer.StatusServiceRestart, "server restarting")
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		_, err := ssetest.Open(timeout(t), nil, s.route, nil)
		if ssetest.Status(err) != http.StatusServiceUnavailable {
			t.Fatalf("stream after Shutdown: %v, want 503", err)
		}
	})
}

// expectClose reads up to the close event, checks it, and checks the
// response ends right after it.
func expectClose(t *testing.T, st *ssetest.Stream, code consumer.StatusCode, reason string) {
	t.Helper()
	c, err := st.Closed(timeout(t))
	if err != nil || c.Code != int(code) || c.Reason != reason {
		t.Fatalf("close event %+v, %v; want %d %q", c, err, code, reason)
	}
	if ev, err := st.Next(timeout(t)); !errors.Is(err, ssetest.ErrEnded) {
		t.Fatalf("after the close event: %+v, %v; want the end", ev, err)
	}
}

// A client that does not read its stream is a slow consumer: once its
// queue is full it is closed with 1013, whether it reads again later (and
// then gets the close event) or never.
func TestSSESlowConsumer(t *testing.T) {
	big := []byte(`"` + strings.Repeat("x", 64<<10) + `"`)
	flood := func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			for i := 0; i < 2000; i++ { // 128 MiB: more than the socket buffers hold
				if c.Send(big) != nil {
					return nil
				}
			}
			return nil
		}}
	}
	for _, tc := range []struct {
		name      string
		readLater bool
	}{{"reads later", true}, {"never reads", false}} {
		t.Run(tc.name, func(t *testing.T) {
			closing := make(chan consumer.StatusCode, 1)
			opts := consumer.Options{QueueBytes: 256 << 10, OnClosing: func(code consumer.StatusCode) { closing <- code }}
			if !tc.readLater {
				opts.WriteTimeout = 300 * time.Millisecond
			}
			s := serveSSE(t, opts, flood)
			req, _ := http.NewRequestWithContext(timeout(t), http.MethodGet, s.route+"?transport=sse", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			id := readOpen(t, br)
			post := ssetest.Poster(s.route, id, nil)
			n, err := post.Send(timeout(t), `"flood"`)
			expectStatus(t, "POST", n, err, http.StatusNoContent)
			select {
			case code := <-closing:
				if code != consumer.StatusTryAgainLater {
					t.Fatalf("closing with %d, want 1013", code)
				}
			case <-timeout(t).Done():
				t.Fatal("the stuck stream was not closed")
			}
			if !tc.readLater {
				if code := s.disconnected(t); code != consumer.StatusTryAgainLater {
					t.Fatalf("Disconnect code %d, want 1013", code)
				}
				return
			}
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("the stream ended without a close event: %v", err)
				}
				if line == "event: close\n" {
					data, _ := br.ReadString('\n')
					if want := `data: {"code":1013,"reason":"slow consumer"}` + "\n"; data != want {
						t.Fatalf("close event data %q, want %q", data, want)
					}
					break
				}
			}
			if code := s.disconnected(t); code != consumer.StatusTryAgainLater {
				t.Fatalf("Disconnect code %d, want 1013", code)
			}
		})
	}
}

// readOpen reads the open event from a raw stream and returns the ID.
func readOpen(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	ev, _ := br.ReadString('\n')
	data, _ := br.ReadString('\n')
	blank, err := br.ReadString('\n')
	if ev != "event: open\n" || blank != "\n" || err != nil {
		t.Fatalf("open event %q %q %q, %v", ev, data, blank, err)
	}
	var open struct{ Stream string }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &open); err != nil {
		t.Fatal(err)
	}
	return open.Stream
}

// An idle stream carries a comment every keepalive interval, and a client
// that goes away is noticed at once (1006).
func TestSSEKeepaliveAndClientGone(t *testing.T) {
	defer consumer.SetSSEKeepalive(20 * time.Millisecond)()
	s := serveSSE(t, consumer.Options{}, echo)
	st, err := ssetest.Open(timeout(t), nil, s.route, nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); st.Comments() < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d keepalive comments in 5 s, want 3", st.Comments())
		}
	}
	st.Close()
	if code := s.disconnected(t); code != consumer.StatusAbnormal {
		t.Fatalf("Disconnect code %d, want 1006", code)
	}
	if n := s.srv.Len(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
}

// Many POSTs to many streams at once: each stream gets its own frames, all
// of them, in order.
func TestSSEConcurrentStreams(t *testing.T) {
	s := serveSSE(t, consumer.Options{}, echo)
	const streams, posts = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		st := s.open(t, fmt.Sprint("user", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if f, err := st.Frame(ctx); err != nil || !strings.Contains(f, "hello") {
				errs <- fmt.Errorf("greeting %q, %v", f, err)
				return
			}
			for j := 0; j < posts; j++ {
				if n, err := st.Send(ctx, fmt.Sprintf(`{"s":%q,"j":%d}`, st.ID, j)); err != nil || n != http.StatusNoContent {
					errs <- fmt.Errorf("POST %d: %d, %v", j, n, err)
					return
				}
			}
			for j := 0; j < posts; j++ {
				want := fmt.Sprintf(`{"s":%q,"j":%d}`, st.ID, j)
				if f, err := st.Frame(ctx); err != nil || f != want {
					errs <- fmt.Errorf("frame %q, %v; want %q", f, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A write the client does not take within the write timeout means the
// stream is dead: the connection ends (1006) though its queue never filled.
func TestSSEWriteTimeoutIsDead(t *testing.T) {
	huge := []byte(`"` + strings.Repeat("x", 32<<20) + `"`) // more than the socket buffers hold
	s := serveSSE(t, consumer.Options{QueueBytes: 64 << 20, WriteTimeout: 300 * time.Millisecond}, func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			return c.Send(huge)
		}}
	})
	req, _ := http.NewRequestWithContext(timeout(t), http.MethodGet, s.route+"?transport=sse", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := readOpen(t, bufio.NewReader(resp.Body))
	n, err := ssetest.Poster(s.route, id, nil).Send(timeout(t), `"go"`)
	expectStatus(t, "POST", n, err, http.StatusNoContent)
	if code := s.disconnected(t); code != consumer.StatusAbnormal {
		t.Fatalf("Disconnect code %d, want 1006", code)
	}
}
