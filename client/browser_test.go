package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/client"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/routing"
)

// page loads the client from the handler, as an app would, and exposes a
// start function that records everything the client reports.
const page = `<!doctype html><html><head><meta charset="utf-8"><title>sdk</title>
<script type="module">
import { Client } from "/static/chatterpro.js?v=` + "%s" + `";
window.start = (opts) => {
  const rec = { states: [], closes: [], frames: [], replies: [], errors: [], written: [] };
  window.rec = rec;
  const c = new Client("/ws/echo/", opts);
  window.c = c;
  c.on("state", (s) => rec.states.push(s + ":" + c.transport));
  c.on("close", (i) => rec.closes.push(i));
  c.on("message", (f) => rec.frames.push(f));
  window.ask = (frame) => c.request(frame).then((d) => rec.replies.push(d), (e) => rec.errors.push(e.code + "|" + e.text));
  window.say = (text) => c.send({ type: "message", text }).then((ok) => rec.written.push(ok));
};
</script></head><body></body></html>`

// hub is the server side of the test: the same answers over a websocket
// (through the framework's consumer server) and over SSE plus POST.
type hub struct {
	mu            sync.Mutex
	seq           int
	sinces        []string // since of each connection, "ws:"/"sse:" first
	pings         int
	refuseUpgrade bool // a proxy that strips websocket upgrades
	refused       int
	mute          bool // the peer stops answering: no pong
	conns         map[*consumer.Conn]bool
	closes        []consumer.StatusCode // websocket closes, as the consumer saw them
	streams       map[string]*stream
	nextStream    int
	seqs          []int // seq of every POST of frames, in arrival order
	sseCloses     []string
}

type stream struct {
	out  chan string // SSE event text
	next int         // next seq to apply
}

// answer returns the frames answering one client frame.
func (h *hub) answer(b []byte) [][]byte {
	var f map[string]any
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []any
	switch f["type"] {
	case "ping":
		h.pings++
		if !h.mute {
			out = append(out, map[string]any{"type": "pong"})
		}
	case "message":
		h.seq++
		out = append(out, map[string]any{"type": "message", "id": strconv.Itoa(h.seq), "text": f["text"]})
	}
	if ref, ok := f["ref"]; ok {
		if f["type"] == "fail" {
			out = append(out, map[string]any{"type": "reply", "ref": ref, "status": "error", "code": "invalid", "text": "refused"})
		} else {
			out = append(out, map[string]any{"type": "reply", "ref": ref, "status": "ok", "data": map[string]any{"echo": f["type"]}})
		}
	}
	var bs [][]byte
	for _, o := range out {
		b, _ := json.Marshal(o)
		bs = append(bs, b)
	}
	return bs
}

// echo is the websocket consumer.
type echo struct{ h *hub }

func (e echo) Connect(ctx context.Context, c *consumer.Conn) error {
	e.h.mu.Lock()
	e.h.sinces = append(e.h.sinces, "ws:"+c.Scope().Query.Get("since"))
	e.h.conns[c] = true
	e.h.mu.Unlock()
	return nil
}

func (e echo) Receive(ctx context.Context, c *consumer.Conn, b []byte) error {
	for _, a := range e.h.answer(b) {
		if err := c.Send(a); err != nil {
			return err
		}
	}
	return nil
}

func (e echo) Disconnect(_ context.Context, c *consumer.Conn, code consumer.StatusCode) {
	e.h.mu.Lock()
	delete(e.h.conns, c)
	e.h.closes = append(e.h.closes, code)
	e.h.mu.Unlock()
}

func (h *hub) closeWebsockets(code consumer.StatusCode) {
	h.mu.Lock()
	var cs []*consumer.Conn
	for c := range h.conns {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.Close(code, "test")
	}
}

// serveSSE is the fallback transport as the protocol describes it, reduced
// to what the client sees: one node, no sessions.
func (h *hub) serveSSE(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodGet {
		h.mu.Lock()
		h.nextStream++
		id := fmt.Sprintf("stream-%d", h.nextStream)
		st := &stream{out: make(chan string, 64), next: 1}
		h.streams[id] = st
		h.sinces = append(h.sinces, "sse:"+q.Get("since"))
		h.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Accel-Buffering", "no")
		fl := w.(http.Flusher)
		fmt.Fprintf(w, "event: open\ndata: {\"stream\":%q}\n\n", id)
		fl.Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case ev := <-st.out:
				io.WriteString(w, ev)
				fl.Flush()
				if len(ev) > 6 && ev[:6] == "event:" {
					return // the close event ends the stream
				}
			}
		}
	}
	h.mu.Lock()
	st := h.streams[q.Get("stream")]
	h.mu.Unlock()
	if st == nil {
		http.Error(w, "unknown stream", http.StatusNotFound)
		return
	}
	if c := q.Get("close"); c != "" {
		h.mu.Lock()
		h.sseCloses = append(h.sseCloses, c)
		h.mu.Unlock()
		h.closeStream(q.Get("stream"), 1000)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var body struct {
		Seq    int               `json:"seq"`
		Frames []json.RawMessage `json:"frames"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.seqs = append(h.seqs, body.Seq)
	apply := body.Seq == st.next
	if apply {
		st.next++
	}
	h.mu.Unlock()
	if apply {
		for _, f := range body.Frames {
			for _, a := range h.answer(f) {
				st.out <- "data: " + string(a) + "\n\n"
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hub) closeStream(id string, code int) {
	h.mu.Lock()
	st := h.streams[id]
	delete(h.streams, id)
	h.mu.Unlock()
	if st != nil {
		st.out <- fmt.Sprintf("event: close\ndata: {\"code\":%d,\"reason\":\"test\"}\n\n", code)
	}
}

func (h *hub) closeStreams(code int) {
	h.mu.Lock()
	var ids []string
	for id := range h.streams {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.closeStream(id, code)
	}
}

// TestBrowser runs chatterpro.js in headless chromium, loaded from Handler,
// against the framework's websocket server, then against the SSE fallback
// behind a "proxy" that refuses upgrades: open, request/reply, ordered
// sends, ping/pong, a dead peer, reconnect with since, close.
func TestBrowser(t *testing.T) {
	h := &hub{conns: map[*consumer.Conn]bool{}, streams: map[string]*stream{}}
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close(context.Background())
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	router, err := routing.New(routing.Options{Server: srv})
	if err != nil {
		t.Fatal(err)
	}
	router.Consumer("/ws/echo/", func() consumer.Consumer { return echo{h} })
	mux := http.NewServeMux()
	mux.Handle("GET /static/chatterpro.js", client.Handler())
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, page, client.Version())
	})
	mux.HandleFunc("/ws/echo/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("transport") == "sse" {
			h.serveSSE(w, r)
			return
		}
		h.mu.Lock()
		refuse := h.refuseUpgrade
		if refuse {
			h.refused++
		}
		h.mu.Unlock()
		if refuse {
			http.Error(w, "upgrades are not allowed here", http.StatusBadRequest)
			return
		}
		router.ServeHTTP(w, r)
	})
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer srv.Shutdown(context.Background())
	defer h.closeStreams(1001)

	ctx, cancel := browsertest.New(context.Background(), t, browsertest.Options{})
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, js string) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := chromedp.Run(c, chromedp.Evaluate[any](js+"; null")); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}
	evalJSON := func(t *testing.T, js string, v any) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(c, chromedp.Evaluate[string]("JSON.stringify("+js+")"))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		if err := json.Unmarshal([]byte(s), v); err != nil {
			t.Fatalf("%s = %s: %v", js, s, err)
		}
	}
	waitJS := func(t *testing.T, what, js string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, cancel := context.WithTimeout(ctx, time.Second)
			ok, err := chromedp.Run(c, chromedp.Evaluate[bool](js))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				var rec any
				evalJSON(t, "window.rec", &rec)
				t.Fatalf("not within 10 s: %s (%s; last error %v)\nrecord: %v", what, js, err, rec)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	waitGo := func(t *testing.T, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 10 s: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	load := func(t *testing.T) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(c, chromedp.Navigate(hs.URL+"/page")); err != nil {
			t.Fatal(err)
		}
		waitJS(t, "the module loaded", `typeof window.start === "function"`)
	}
	const opts = `{pingInterval: 400, pingTimeout: 400, backoff: {min: 50, max: 200}}`
	texts := func(t *testing.T) []string {
		var got []string
		evalJSON(t, `window.rec.frames.map(f => f.id + ":" + f.text)`, &got)
		return got
	}

	t.Run("websocket", func(t *testing.T) {
		load(t)
		run(t, `start(`+opts+`)`)
		waitJS(t, "open over a websocket", `c.state === "open" && c.transport === "websocket"`)
		run(t, `say("one"); say("two"); say("three"); ask({type: "join"}); ask({type: "fail"})`)
		waitJS(t, "three echoes, two answers", `rec.frames.length === 3 && rec.replies.length === 1 && rec.errors.length === 1`)
		if got := fmt.Sprint(texts(t)); got != "[1:one 2:two 3:three]" {
			t.Errorf("echoes %s", got)
		}
		var answers []any
		evalJSON(t, `[rec.replies[0].echo, rec.errors[0], rec.written]`, &answers)
		if fmt.Sprint(answers) != "[join invalid|refused [true true true]]" {
			t.Errorf("answers %v", answers)
		}

		// Idle: the client pings, the server answers, the socket stays.
		waitGo(t, "two pings", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.pings >= 2 })
		var closes int
		evalJSON(t, `rec.closes.length`, &closes)
		if closes != 0 {
			t.Errorf("answered pings dropped the connection")
		}

		// A restart: the client comes back with since = the last ID.
		h.closeWebsockets(consumer.StatusServiceRestart)
		waitJS(t, "reconnected", `rec.closes.length === 1 && c.state === "open"`)
		h.mu.Lock()
		sinces := fmt.Sprint(h.sinces)
		h.mu.Unlock()
		if sinces != "[ws: ws:3]" {
			t.Errorf("sinces %s; want the second connection to resume from 3", sinces)
		}

		// A dead peer: pings go unanswered, the client drops the socket and
		// reconnects by itself.
		h.mu.Lock()
		h.mute = true
		h.mu.Unlock()
		waitJS(t, "dropped for want of a pong", `rec.closes.length === 2 && rec.closes[1].code === 1006 && rec.closes[1].reconnect`)
		h.mu.Lock()
		h.mute = false
		h.mu.Unlock()
		waitJS(t, "open again", `c.state === "open"`)

		run(t, `c.close(1000, "bye")`)
		waitJS(t, "offline", `c.state === "offline"`)
		waitGo(t, "the server saw 1000", func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return len(h.closes) > 0 && h.closes[len(h.closes)-1] == consumer.StatusNormal
		})
	})

	t.Run("sse fallback", func(t *testing.T) {
		h.mu.Lock()
		h.refuseUpgrade = true
		h.sinces = nil
		h.mu.Unlock()
		load(t)
		run(t, `start(`+opts+`)`)
		waitJS(t, "open over SSE", `c.state === "open" && c.transport === "sse"`)
		h.mu.Lock()
		refused := h.refused
		h.mu.Unlock()
		if refused != 2 {
			t.Errorf("%d upgrades refused before the fallback; want 2", refused)
		}
		var states []string
		evalJSON(t, `rec.states`, &states)
		var failed []any
		evalJSON(t, `rec.closes.map(c => [c.code, c.opened, c.reconnect])`, &failed)
		if fmt.Sprint(failed) != "[[1006 false true] [1006 false true]]" {
			t.Errorf("close events before the fallback %v; want two failed attempts", failed)
		}
		if fmt.Sprint(states) != "[connecting:websocket open:sse]" {
			t.Errorf("states %v", states)
		}
		run(t, `for (let i = 0; i < 8; i++) say("m" + i); ask({type: "join"}); ask({type: "fail"})`)
		waitJS(t, "eight echoes and two answers", `rec.frames.length === 8 && rec.replies.length === 1 && rec.errors.length === 1`)
		want := "[4:m0 5:m1 6:m2 7:m3 8:m4 9:m5 10:m6 11:m7]"
		if got := fmt.Sprint(texts(t)); got != want {
			t.Errorf("echoes %s; want %s", got, want)
		}
		h.mu.Lock()
		seqs := append([]int(nil), h.seqs...)
		h.mu.Unlock()
		for i, s := range seqs {
			if s != i+1 {
				t.Fatalf("POST seqs %v; want 1, 2, 3, ...", seqs)
			}
		}

		// Idle: pings by POST, pongs on the stream.
		waitGo(t, "pings over POST", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.pings >= 4 })

		// The server closes the stream with 1012: the client reconnects
		// over SSE, resuming from the last ID, and its seq starts over.
		h.closeStreams(1012)
		waitJS(t, "reconnected over SSE", `rec.closes.length === 3 && rec.closes[2].code === 1012 && c.state === "open" && c.transport === "sse"`)
		run(t, `say("after")`)
		waitJS(t, "the echo after the reconnect", `rec.frames.length === 9`)
		h.mu.Lock()
		sinces := fmt.Sprint(h.sinces)
		last := h.seqs[len(h.seqs)-1]
		refused = h.refused
		h.mu.Unlock()
		if sinces != "[sse: sse:11]" {
			t.Errorf("sinces %s; want the second stream to resume from 11", sinces)
		}
		if last != 1 && last != 2 { // a ping may have gone first
			t.Errorf("first POSTs of the new stream end at seq %d", last)
		}
		if refused != 2 {
			t.Errorf("%d upgrades tried; the client should keep to SSE once it opened", refused)
		}

		run(t, `c.close(1000)`)
		waitJS(t, "offline", `c.state === "offline"`)
		h.mu.Lock()
		closes := fmt.Sprint(h.sseCloses)
		h.mu.Unlock()
		if closes != "[1000]" {
			t.Errorf("close POSTs %s; want [1000]", closes)
		}
	})
}
