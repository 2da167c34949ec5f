package static_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/static"
	"github.com/chatterpro/chatterpro/templates"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// cidServer is a stand-in for the chat consumer that keeps the wire
// interface's promise about cid: a message is recorded once per cid, and a
// repeat gets the original frame back, to the sender alone.
type cidServer struct {
	mu       sync.Mutex
	msgs     []map[string]any
	byCid    map[string]map[string]any
	received []string // cid of every message frame received
	conns    map[*websocket.Conn]bool
	hold     bool             // record, but keep the echoes in held
	held     []map[string]any // echoes not sent yet
	drop     bool             // record, then cut the sender's socket without an echo
	connects int
}

func (s *cidServer) write(c *websocket.Conn, v any) {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Write(ctx, websocket.MessageText, b)
}

func (s *cidServer) broadcast(v any) {
	for c := range s.conns {
		s.write(c, v)
	}
}

func (s *cidServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	since := r.URL.Query().Get("since")
	s.mu.Lock()
	s.connects++
	start := 0
	for i, m := range s.msgs {
		if m["id"] == since {
			start = i + 1
		}
	}
	// History without cids, so a message recorded but never acknowledged
	// is resent and answered by its repeat.
	hist := []map[string]any{}
	for _, m := range s.msgs[start:] {
		h := map[string]any{}
		for k, v := range m {
			if k != "cid" {
				h[k] = v
			}
		}
		hist = append(hist, h)
	}
	s.write(c, map[string]any{"type": "history", "messages": hist})
	s.conns[c] = true
	s.broadcast(map[string]any{"type": "users", "room": "r", "count": 1, "users": []map[string]any{{"name": "ann"}}})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	for {
		_, data, err := c.Read(r.Context())
		if err != nil {
			return
		}
		var f struct{ Type, Text, Cid string }
		json.Unmarshal(data, &f)
		if f.Type == "ping" {
			s.write(c, map[string]any{"type": "pong"})
			continue
		}
		if f.Type != "message" {
			continue // typing, older: not what this server is about
		}
		s.mu.Lock()
		s.received = append(s.received, f.Cid)
		if m, ok := s.byCid[f.Cid]; ok {
			s.write(c, m) // a repeat: the original, to the sender alone
			s.mu.Unlock()
			continue
		}
		m := map[string]any{"type": "message", "id": strconv.Itoa(len(s.msgs) + 1), "user": "ann", "text": f.Text,
			"time": time.Now().UTC().Format(time.RFC3339), "cid": f.Cid}
		s.msgs = append(s.msgs, m)
		s.byCid[f.Cid] = m
		switch {
		case s.drop:
			s.drop = false
			s.mu.Unlock()
			return // the acknowledgement is lost with the socket
		case s.hold:
			s.held = append(s.held, m)
		default:
			s.broadcast(m)
		}
		s.mu.Unlock()
	}
}

// TestChatMatchesByCid runs chat.js in chromium against cidServer: two
// messages with the same text are acknowledged each by its own echo, in the
// order the echoes come, and a message whose acknowledgement was lost with
// its socket is resent with the same cid and shown once.
func TestChatMatchesByCid(t *testing.T) {
	tmpl, err := template.New("").Funcs(template.FuncMap{"static": func(name string) string { return "/static/" + name }}).ParseFS(templates.FS, "*.html")
	if err != nil {
		t.Fatal(err)
	}
	var pageHTML bytes.Buffer
	if err := tmpl.ExecuteTemplate(&pageHTML, "chat.html", map[string]string{"Room": "r", "Nickname": "ann"}); err != nil {
		t.Fatal(err)
	}
	cs := &cidServer{byCid: map[string]map[string]any{}, conns: map[*websocket.Conn]bool{}}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static.FS)))
	mux.HandleFunc("GET /chat/r", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(pageHTML.Bytes())
	})
	mux.Handle("GET /ws/chat/r/", cs)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	ctx, cancel := browsertest.New(context.Background(), t, browsertest.Options{})
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	waitJS := func(what, js string) {
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
				c, cancel := context.WithTimeout(ctx, time.Second)
				html, _ := chromedp.Run(c, chromedp.OuterHTML("#messages"))
				cancel()
				t.Fatalf("not within 10 s: %s (%s; last error %v)\n%s", what, js, err, html)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	const pending = `document.querySelectorAll("#messages li.pending")`
	const shown = `[...document.querySelectorAll("#messages li.message:not(.pending) .text")].map(e => e.textContent).join("|")`

	do("opening the chat", chromedp.Navigate(hs.URL+"/chat/r"), chromedp.WaitVisible("#messages"))
	waitJS("online", `document.getElementById("status").dataset.state === "open"`)

	// Two messages with the same text; the second one's echo comes first.
	cs.mu.Lock()
	cs.hold = true
	cs.mu.Unlock()
	do("typing twice", chromedp.SendKeys("#message-input", "same\r"), chromedp.SendKeys("#message-input", "same\r"))
	waitJS("both sent", pending+`.length === 2 && [...`+pending+`].every(li => li.querySelector(".time").textContent === "sending…")`)
	for deadline := time.Now().Add(10 * time.Second); ; {
		cs.mu.Lock()
		n := len(cs.held)
		cs.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server got %d of the 2 messages", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	do("marking the first", chromedp.Evaluate[chromedp.Void](pending+`[0].dataset.mark = "first"`))
	cs.mu.Lock()
	cs.hold = false
	cs.broadcast(cs.held[1])
	cs.mu.Unlock()
	waitJS("the second acknowledged, the first still pending",
		pending+`.length === 1 && `+pending+`[0].dataset.mark === "first" && `+shown+` === "same"`)
	cs.mu.Lock()
	cs.broadcast(cs.held[0])
	cs.held = nil
	cs.mu.Unlock()
	waitJS("both acknowledged", pending+`.length === 0 && `+shown+` === "same|same"`)

	// A message from another tab of the same nickname, same text, its own
	// cid: it acknowledges nothing here.
	cs.mu.Lock()
	cs.hold = true
	cs.mu.Unlock()
	do("typing again", chromedp.SendKeys("#message-input", "again\r"))
	waitJS("pending", pending+`.length === 1`)
	cs.mu.Lock()
	cs.broadcast(map[string]any{"type": "message", "id": "other-1", "user": "ann", "text": "again", "cid": "other-tab"})
	cs.mu.Unlock()
	waitJS("the other tab's message shown", shown+` === "same|same|again"`)
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](pending+`.length`)); n != 1 {
		t.Errorf("another tab's message with the same text acknowledged ours (%d pending)", n)
	}
	cs.mu.Lock()
	cs.hold = false
	cs.broadcast(cs.held[0])
	cs.held = nil
	cs.mu.Unlock()
	waitJS("acknowledged by its own echo", pending+`.length === 0 && `+shown+` === "same|same|again|again"`)

	// The acknowledgement is lost with the socket: the page resends the
	// same cid after reconnecting, and the message shows once.
	cs.mu.Lock()
	cs.drop = true
	before := cs.connects
	cs.mu.Unlock()
	do("typing the lost one", chromedp.SendKeys("#message-input", "lost ack\r"))
	waitJS("acknowledged after the reconnect", pending+`.length === 0 && `+shown+` === "same|same|again|again|lost ack"`)
	cs.mu.Lock()
	connects := cs.connects
	recorded := 0
	sends := 0
	var lostCid string
	for _, m := range cs.msgs {
		if m["text"] == "lost ack" {
			recorded++
			lostCid = m["cid"].(string)
		}
	}
	for _, c := range cs.received {
		if c == lostCid {
			sends++
		}
	}
	cs.mu.Unlock()
	if connects != before+1 {
		t.Errorf("%d connections after the drop; want one more than %d", connects, before)
	}
	if recorded != 1 || sends != 2 {
		t.Errorf("lost ack: recorded %d times, sent %d times; want 1 and 2 (a resend with the same cid)", recorded, sends)
	}
	if len(lostCid) != 32 {
		t.Errorf("cid %q; want 32 hex digits", lostCid)
	}
	ids, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#messages li.message")].map(li => li.dataset.id)`))
	if fmt.Sprint(ids) != "[2 1 other-1 3 4]" { // in the order the echoes came
		t.Errorf("message IDs shown %v; want [2 1 other-1 3 4], each once", ids)
	}

	// A frame without a cid acknowledges nothing, even with our nickname
	// and the text of a pending message: only the cid matches.
	cs.mu.Lock()
	cs.hold = true
	cs.mu.Unlock()
	do("typing one more", chromedp.SendKeys("#message-input", "no fallback\r"))
	for deadline := time.Now().Add(10 * time.Second); ; {
		cs.mu.Lock()
		n := len(cs.held)
		cs.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not get the message")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cs.mu.Lock()
	cs.broadcast(map[string]any{"type": "message", "id": "nocid-1", "user": "ann", "text": "no fallback"})
	cs.mu.Unlock()
	waitJS("the cid-less message shown, ours still pending",
		shown+` === "same|same|again|again|lost ack|no fallback" && `+pending+`.length === 1`)
	cs.mu.Lock()
	cs.hold = false
	cs.broadcast(cs.held[0])
	cs.held = nil
	cs.mu.Unlock()
	waitJS("acknowledged by its cid", pending+`.length === 0 && `+shown+` === "same|same|again|again|lost ack|no fallback|no fallback"`)
}
