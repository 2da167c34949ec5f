package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/auth"
	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

var pagesSecret = []byte("pages test secret, 32 bytes long")

func pageSessions(t *testing.T, now func() time.Time) *auth.Sessions {
	t.Helper()
	s, err := auth.New(auth.Options{Secret: pagesSecret, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testPages returns a mux with the pages registered.
func newTestPages(t *testing.T) (http.Handler, *auth.Sessions) {
	t.Helper()
	s := pageSessions(t, nil)
	p, err := newPages(pagesConfig{
		Sessions:       s,
		Rooms:          []string{"Chat Room", "Business Room", "Gaming Room"},
		AllowedOrigins: []string{"http://allowed.example"},
	})
	if err != nil {
		t.Fatalf("newPages: %v", err)
	}
	mux := http.NewServeMux()
	p.register(mux)
	return mux, s
}

type pageResponse struct {
	code int
	h    http.Header
	body string
	resp *http.Response
}

func pageDo(t *testing.T, h http.Handler, r *http.Request) pageResponse {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return pageResponse{code: res.StatusCode, h: res.Header, body: string(b), resp: res}
}

func pagePost(target string, form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func pageCookie(t *testing.T, s *auth.Sessions, nickname string) *http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if _, err := s.Login(w, httptest.NewRequest(http.MethodPost, "/join", nil), nickname); err != nil {
		t.Fatal(err)
	}
	return w.Result().Cookies()[0]
}

func checkPageHeaders(t *testing.T, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "style-src 'self'", "connect-src 'self'", "default-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "*") {
		t.Errorf("CSP too loose: %q", csp)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", h.Get("X-Content-Type-Options"))
	}
	if h.Get("Referrer-Policy") != "same-origin" {
		t.Errorf("Referrer-Policy = %q", h.Get("Referrer-Policy"))
	}
}

func TestJoinPage(t *testing.T) {
	h, _ := newTestPages(t)
	res := pageDo(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
	if res.code != http.StatusOK {
		t.Fatalf("GET / = %d", res.code)
	}
	if ct := res.h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	checkPageHeaders(t, res.h)
	for _, want := range []string{
		"ChatterPro",
		`id="join-form"`, `id="nickname"`, `id="room"`, `id="room-other"`, `id="join"`,
		`<option value="Chat Room">Chat Room</option>`,
		`<option value="Business Room">Business Room</option>`,
		`<option value="Gaming Room">Gaming Room</option>`,
		`action="/join"`,
	} {
		if !strings.Contains(res.body, want) {
			t.Errorf("join page lacks %q", want)
		}
	}
	if strings.Contains(res.body, `class="error"`) {
		t.Errorf("join page shows an error without one")
	}
	if strings.Contains(res.body, "http://") || strings.Contains(res.body, "https://") {
		t.Errorf("join page refers to something external")
	}
}

func TestJoinPageUnknownPath(t *testing.T) {
	h, _ := newTestPages(t)
	if res := pageDo(t, h, httptest.NewRequest(http.MethodGet, "/nope", nil)); res.code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", res.code)
	}
}

func TestJoinInvalid(t *testing.T) {
	tests := []struct {
		name    string
		form    url.Values
		wantErr string
		keep    []string // values re-rendered in the form
	}{
		{"empty nickname", url.Values{"nickname": {""}, "room": {"Chat Room"}}, "Please enter a nickname.", []string{`<option value="Chat Room" selected>`}},
		{"whitespace nickname", url.Values{"nickname": {"   "}, "room": {"Gaming Room"}}, "Please enter a nickname.", []string{`<option value="Gaming Room" selected>`}},
		{"33 runes", url.Values{"nickname": {strings.Repeat("ö", 33)}, "room": {"Chat Room"}}, "at most 32 characters", []string{strings.Repeat("ö", 33)}},
		{"control character", url.Values{"nickname": {"bad\x07name"}, "room": {"Chat Room"}}, "control characters", nil},
		{"no room", url.Values{"nickname": {"alice"}}, "choose a room", []string{`value="alice"`}},
		{"slash in room", url.Values{"nickname": {"alice"}, "room": {"Chat Room"}, "room-other": {"a/b"}}, "slash", []string{`value="alice"`, `value="a/b"`}},
		{"65 runes room", url.Values{"nickname": {"alice"}, "room-other": {strings.Repeat("r", 65)}}, "at most 64 characters", []string{strings.Repeat("r", 65)}},
		{"control in room", url.Values{"nickname": {"alice"}, "room-other": {"x\ny"}}, "control characters", nil},
	}
	h, _ := newTestPages(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := pageDo(t, h, pagePost("/join", tt.form))
			if res.code != http.StatusBadRequest {
				t.Fatalf("POST /join = %d, want 400", res.code)
			}
			if c := res.resp.Cookies(); len(c) != 0 {
				t.Errorf("invalid join set cookies %v", c)
			}
			if !strings.Contains(res.body, `<p class="error" role="alert">`) || !strings.Contains(res.body, tt.wantErr) {
				t.Errorf("400 page lacks error %q:\n%s", tt.wantErr, res.body)
			}
			if !strings.Contains(res.body, `id="join-form"`) {
				t.Errorf("400 page lacks the form")
			}
			for _, k := range tt.keep {
				if !strings.Contains(res.body, k) {
					t.Errorf("400 page does not keep %q", k)
				}
			}
			checkPageHeaders(t, res.h)
		})
	}
}

func TestJoinValid(t *testing.T) {
	tests := []struct {
		name         string
		form         url.Values
		wantLocation string
		wantNick     string
	}{
		{"select", url.Values{"nickname": {"alice"}, "room": {"Chat Room"}}, "/chat/Chat%20Room", "alice"},
		{"trimmed", url.Values{"nickname": {"  bob  "}, "room": {" Gaming Room "}}, "/chat/Gaming%20Room", "bob"},
		{"other room wins", url.Values{"nickname": {"carol"}, "room": {"Chat Room"}, "room-other": {"Café ☕"}}, "/chat/Caf%C3%A9%20%E2%98%95", "carol"},
		{"blank other room ignored", url.Values{"nickname": {"dave"}, "room": {"Business Room"}, "room-other": {"  "}}, "/chat/Business%20Room", "dave"},
		{"specials escaped", url.Values{"nickname": {"erin"}, "room-other": {"a?b#c%d"}}, "/chat/a%3Fb%23c%25d", "erin"},
		{"unicode nickname", url.Values{"nickname": {"Zoë 🦊"}, "room": {"Chat Room"}}, "/chat/Chat%20Room", "Zoë 🦊"},
	}
	h, s := newTestPages(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := pageDo(t, h, pagePost("/join", tt.form))
			if res.code != http.StatusSeeOther {
				t.Fatalf("POST /join = %d, want 303; body:\n%s", res.code, res.body)
			}
			if loc := res.h.Get("Location"); loc != tt.wantLocation {
				t.Errorf("Location = %q, want %q", loc, tt.wantLocation)
			}
			cookies := res.resp.Cookies()
			if len(cookies) != 1 {
				t.Fatalf("cookies = %v", cookies)
			}
			c := cookies[0]
			if c.Name != "chatterpro_session" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure || c.MaxAge <= 0 {
				t.Errorf("cookie = %+v", c)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.AddCookie(c)
			sess, err := s.FromRequest(r)
			if err != nil || sess.Nickname != tt.wantNick {
				t.Errorf("session = %+v, %v; want nickname %q", sess, err, tt.wantNick)
			}
		})
	}
}

// pageMultipart builds a multipart/form-data POST, as curl -F or fetch with a
// FormData sends it; files maps field names to file contents.
func pageMultipart(t *testing.T, target string, fields map[string]string, files map[string]string) *http.Request {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		fw, err := mw.CreateFormFile(k, k+".txt")
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(v))
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, target, &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	return r
}

// POST /join reads a multipart body like a URL-encoded one, within the same
// size limit and without files; query-string fields never count.
func TestJoinMultipart(t *testing.T) {
	tests := []struct {
		name    string
		req     func(t *testing.T) *http.Request
		want    int
		wantLoc string // on 303
		wantErr string // on 400
	}{
		{"multipart", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": "Zoë", "room": "Chat Room"}, nil)
		}, http.StatusSeeOther, "/chat/Chat%20Room", ""},
		{"multipart other room", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": "Zoë", "room": "Chat Room", "room-other": "Café"}, nil)
		}, http.StatusSeeOther, "/chat/Caf%C3%A9", ""},
		{"multipart invalid nickname", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": " ", "room": "Chat Room"}, nil)
		}, http.StatusBadRequest, "", "Please enter a nickname."},
		{"multipart with a file", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": "Zoë", "room": "Chat Room"}, map[string]string{"avatar": "GIF89a"})
		}, http.StatusBadRequest, "", "The form takes a nickname and a room, no files."},
		{"multipart with a file: the nickname stays in the form", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": "Zoë", "room": "Chat Room"}, map[string]string{"avatar": "GIF89a"})
		}, http.StatusBadRequest, "", `value="Zoë"`},
		{"multipart too large", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join", map[string]string{"nickname": "Zoë", "room": "Chat Room", "pad": strings.Repeat("x", maxFormBytes)}, nil)
		}, http.StatusBadRequest, "", "The form is too large"},
		{"urlencoded too large", func(t *testing.T) *http.Request {
			return pagePost("/join", url.Values{"nickname": {"Zoë"}, "room": {"Chat Room"}, "pad": {strings.Repeat("x", maxFormBytes)}})
		}, http.StatusBadRequest, "", "The form is too large"},
		{"multipart: query fields ignored", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join?nickname=Eve&room=Chat+Room", map[string]string{"room": "Gaming Room"}, nil)
		}, http.StatusBadRequest, "", "Please enter a nickname."},
		{"urlencoded: query fields ignored", func(t *testing.T) *http.Request {
			return pagePost("/join?nickname=Eve&room=Chat+Room", url.Values{"room": {"Gaming Room"}})
		}, http.StatusBadRequest, "", "Please enter a nickname."},
		{"multipart: body wins over query", func(t *testing.T) *http.Request {
			return pageMultipart(t, "/join?room=Chat+Room", map[string]string{"nickname": "Zoë", "room": "Gaming Room"}, nil)
		}, http.StatusSeeOther, "/chat/Gaming%20Room", ""},
	}
	h, s := newTestPages(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := pageDo(t, h, tt.req(t))
			if res.code != tt.want {
				t.Fatalf("POST /join = %d, want %d; body:\n%s", res.code, tt.want, res.body)
			}
			if tt.want == http.StatusBadRequest {
				if !strings.Contains(res.body, tt.wantErr) {
					t.Errorf("400 page lacks error %q:\n%s", tt.wantErr, res.body)
				}
				if c := res.resp.Cookies(); len(c) != 0 {
					t.Errorf("invalid join set cookies %v", c)
				}
				return
			}
			if loc := res.h.Get("Location"); loc != tt.wantLoc {
				t.Errorf("Location = %q, want %q", loc, tt.wantLoc)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, c := range res.resp.Cookies() {
				r.AddCookie(c)
			}
			if sess, err := s.FromRequest(r); err != nil || sess.Nickname != "Zoë" {
				t.Errorf("session = %+v, %v; want nickname Zoë", sess, err)
			}
		})
	}
}

// TestJoinThenChat follows the redirect of a join to the chat page.
func TestJoinThenChat(t *testing.T) {
	h, _ := newTestPages(t)
	res := pageDo(t, h, pagePost("/join", url.Values{"nickname": {"Zoë"}, "room-other": {"Café ☕ 50%"}}))
	if res.code != http.StatusSeeOther {
		t.Fatalf("POST /join = %d", res.code)
	}
	r := httptest.NewRequest(http.MethodGet, res.h.Get("Location"), nil)
	r.AddCookie(res.resp.Cookies()[0])
	chat := pageDo(t, h, r)
	if chat.code != http.StatusOK {
		t.Fatalf("GET %s = %d", res.h.Get("Location"), chat.code)
	}
	for _, want := range []string{`data-room="Café ☕ 50%"`, `data-nickname="Zoë"`, `<h1 id="room-name">Café ☕ 50%</h1>`} {
		if !strings.Contains(chat.body, want) {
			t.Errorf("chat page lacks %q", want)
		}
	}
}

func TestChatPageSession(t *testing.T) {
	h, s := newTestPages(t)
	good := pageCookie(t, s, "alice")
	tampered := *good
	tampered.Value = strings.Replace(good.Value, ".", ".x", 1)
	expired := pageCookie(t, pageSessions(t, func() time.Time { return time.Now().Add(-25 * time.Hour) }), "alice")
	other, err := auth.New(auth.Options{Secret: []byte("a different secret of 16+ bytes")})
	if err != nil {
		t.Fatal(err)
	}
	foreign := pageCookie(t, other, "alice")

	tests := []struct {
		name   string
		cookie *http.Cookie
		want   int
	}{
		{"no cookie", nil, http.StatusSeeOther},
		{"tampered cookie", &tampered, http.StatusSeeOther},
		{"garbage cookie", &http.Cookie{Name: "chatterpro_session", Value: "garbage"}, http.StatusSeeOther},
		{"expired cookie", expired, http.StatusSeeOther},
		{"other secret", foreign, http.StatusSeeOther},
		{"valid", good, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/chat/Chat%20Room", nil)
			if tt.cookie != nil {
				r.AddCookie(tt.cookie)
			}
			res := pageDo(t, h, r)
			if res.code != tt.want {
				t.Fatalf("GET /chat = %d, want %d", res.code, tt.want)
			}
			if tt.want == http.StatusSeeOther && res.h.Get("Location") != "/" {
				t.Errorf("Location = %q, want /", res.h.Get("Location"))
			}
		})
	}
}

func TestChatPage(t *testing.T) {
	h, s := newTestPages(t)
	tests := []struct {
		name     string
		nickname string
		path     string
		want     int
		contains []string
		lacks    []string
	}{
		{"plain", "alice", "/chat/Chat%20Room", http.StatusOK,
			[]string{`data-room="Chat Room"`, `data-nickname="alice"`, `id="room-name">Chat Room<`}, nil},
		{"unicode room", "alice", "/chat/" + url.PathEscape("Café ☕ 日本"), http.StatusOK,
			[]string{`data-room="Café ☕ 日本"`}, nil},
		{"escaped specials", "alice", "/chat/a%3Fb%23c%25d", http.StatusOK,
			[]string{`data-room="a?b#c%d"`}, nil},
		{"html in nickname is escaped", `<script>alert("x")</script>`, "/chat/Chat%20Room", http.StatusOK,
			[]string{`data-nickname="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"`, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;</span>`},
			[]string{`<script>alert`}},
		{"html in room is escaped", "alice", "/chat/" + url.PathEscape(`<img src=x onerror=alert(1)>`), http.StatusOK,
			[]string{`&lt;img src=x onerror=alert(1)&gt;`}, []string{`<img src=x`}},
		{"quote in nickname", `a" onload="x`, "/chat/Chat%20Room", http.StatusOK,
			[]string{`data-nickname="a&#34; onload=&#34;x"`}, []string{`onload="x`}},
		{"escaped slash is invalid", "alice", "/chat/a%2Fb", http.StatusBadRequest, []string{"not a valid room name", "slash"}, nil},
		{"too long room", "alice", "/chat/" + strings.Repeat("x", 65), http.StatusBadRequest, []string{"not a valid room name"}, nil},
		{"control character", "alice", "/chat/a%07b", http.StatusBadRequest, []string{"control characters"}, nil},
		{"blank room", "alice", "/chat/%20%20", http.StatusBadRequest, []string{"not a valid room name"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.path, nil)
			r.AddCookie(pageCookie(t, s, tt.nickname))
			res := pageDo(t, h, r)
			if res.code != tt.want {
				t.Fatalf("GET %s = %d, want %d\n%s", tt.path, res.code, tt.want, res.body)
			}
			checkPageHeaders(t, res.h)
			for _, want := range tt.contains {
				if !strings.Contains(res.body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			for _, bad := range tt.lacks {
				if strings.Contains(res.body, bad) {
					t.Errorf("page contains unescaped %q", bad)
				}
			}
			if tt.want == http.StatusOK {
				for _, id := range []string{`id="room-name"`, `id="user-count"`, `id="users"`, `id="messages"`,
					`id="message-input"`, `id="send"`, `id="leave"`, `id="status"`, `data-state="connecting"`} {
					if !strings.Contains(res.body, id) {
						t.Errorf("chat page lacks %s", id)
					}
				}
			}
		})
	}
}

func TestLeave(t *testing.T) {
	h, s := newTestPages(t)
	r := httptest.NewRequest(http.MethodPost, "/leave", nil)
	r.AddCookie(pageCookie(t, s, "alice"))
	res := pageDo(t, h, r)
	if res.code != http.StatusSeeOther || res.h.Get("Location") != "/" {
		t.Fatalf("POST /leave = %d to %q", res.code, res.h.Get("Location"))
	}
	cookies := res.resp.Cookies()
	if len(cookies) != 1 || cookies[0].Name != "chatterpro_session" || cookies[0].MaxAge >= 0 {
		t.Errorf("leave cookies = %v", cookies)
	}
}

func TestCrossOrigin(t *testing.T) {
	valid := url.Values{"nickname": {"alice"}, "room": {"Chat Room"}}
	tests := []struct {
		name    string
		target  string
		headers map[string]string
		want    int
	}{
		{"join from evil site", "/join", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"join from evil origin, no fetch metadata", "/join", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"leave from evil site", "/leave", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"join from allowed origin", "/join", map[string]string{"Origin": "http://allowed.example", "Sec-Fetch-Site": "cross-site"}, http.StatusSeeOther},
		{"join same origin", "/join", map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
		{"join same host origin", "/join", map[string]string{"Origin": "http://example.com"}, http.StatusSeeOther},
		{"join without browser headers", "/join", nil, http.StatusSeeOther},
		{"leave same origin", "/leave", map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
	}
	h, _ := newTestPages(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := pagePost(tt.target, valid)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			res := pageDo(t, h, r)
			if res.code != tt.want {
				t.Fatalf("POST %s = %d, want %d", tt.target, res.code, tt.want)
			}
			if tt.want == http.StatusForbidden {
				if c := res.resp.Cookies(); len(c) != 0 {
					t.Errorf("refused request set cookies %v", c)
				}
				checkPageHeaders(t, res.h)
			}
		})
	}
}

// POST /join and the websocket judge an Origin alike: its scheme and host
// match the allowed origins whatever their case, on either side.
func TestOriginCheckAgrees(t *testing.T) {
	n := newNode(t, nil, func(c *Config) {
		c.AllowedOrigins = []string{"HTTP://UP.EXAMPLE", "http://a.example:8080"}
	})
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	cookie := pageCookie(t, n.app.sessions, "alice")
	tests := []struct {
		origin string
		ok     bool
	}{
		{"http://up.example", true},
		{"HTTP://UP.EXAMPLE", true},
		{"http://a.example:8080", true},
		{"http://A.example:8080", true},
		{"https://up.example", false},
		{"http://a.example:8081", false},
		{"http://evil.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			form := url.Values{"nickname": {"alice"}, "room": {"Chat Room"}}
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/join", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", tt.origin)
			resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := map[bool]int{true: http.StatusSeeOther, false: http.StatusForbidden}[tt.ok]; resp.StatusCode != want {
				t.Errorf("POST /join = %d, want %d", resp.StatusCode, want)
			}

			h := http.Header{"Origin": {tt.origin}}
			h.Set("Cookie", cookie.Name+"="+cookie.Value)
			ws, wsResp, err := websocket.Dial(ctxT(t), "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws/chat/r/", &websocket.DialOptions{HTTPHeader: h})
			if err == nil {
				ws.Close(websocket.StatusNormalClosure, "")
			}
			switch {
			case tt.ok && err != nil:
				t.Errorf("websocket refused: %v", err)
			case !tt.ok && (err == nil || wsResp == nil || wsResp.StatusCode != http.StatusForbidden):
				t.Errorf("websocket: %v, %v; want 403", wsResp, err)
			}
		})
	}
}

func TestStatic(t *testing.T) {
	h, _ := newTestPages(t)
	p, err := newPages(pagesConfig{Sessions: pageSessions(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		want   int
		ctype  string
		substr string
	}{
		{"css", "/static/style.css", http.StatusOK, "text/css; charset=utf-8", ".message"},
		{"chat js", "/static/chat.js", http.StatusOK, "text/javascript; charset=utf-8", "textContent"},
		{"join js", "/static/join.js", http.StatusOK, "text/javascript; charset=utf-8", "room-other"},
		{"svg", "/static/favicon.svg", http.StatusOK, "image/svg+xml", "<svg"},
		{"missing", "/static/nope.js", http.StatusNotFound, "", ""},
		{"go source not served", "/static/embed.go", http.StatusNotFound, "", ""},
		{"no listing", "/static/", http.StatusNotFound, "", ""},
		{"no traversal", "/static/../templates/join.html", http.StatusNotFound, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := pageDo(t, h, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if res.code == http.StatusMovedPermanently || res.code == http.StatusTemporaryRedirect {
				// ServeMux cleans ".." paths with a redirect, away from /static/.
				if loc := res.h.Get("Location"); strings.HasPrefix(loc, "/static/") {
					t.Fatalf("redirect to %q", loc)
				}
				return
			}
			if res.code != tt.want {
				t.Fatalf("GET %s = %d, want %d", tt.path, res.code, tt.want)
			}
			if tt.want != http.StatusOK {
				return
			}
			if ct := res.h.Get("Content-Type"); ct != tt.ctype {
				t.Errorf("Content-Type = %q, want %q", ct, tt.ctype)
			}
			if res.h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff")
			}
			if !strings.Contains(res.body, tt.substr) {
				t.Errorf("body lacks %q", tt.substr)
			}
			if res.h.Get("ETag") == "" || res.h.Get("Cache-Control") != "no-cache" {
				t.Errorf("unversioned: ETag %q, Cache-Control %q", res.h.Get("ETag"), res.h.Get("Cache-Control"))
			}
		})
	}

	t.Run("versioned url is immutable", func(t *testing.T) {
		u, err := p.staticURL("chat.js")
		if err != nil {
			t.Fatal(err)
		}
		res := pageDo(t, h, httptest.NewRequest(http.MethodGet, u, nil))
		if res.code != http.StatusOK || !strings.Contains(res.h.Get("Cache-Control"), "immutable") {
			t.Errorf("GET %s = %d, Cache-Control %q", u, res.code, res.h.Get("Cache-Control"))
		}
		page := pageDo(t, h, httptest.NewRequest(http.MethodGet, "/", nil))
		if !strings.Contains(page.body, `href="`+strings.ReplaceAll(pageStaticURL(t, p, "style.css"), "&", "&amp;")+`"`) {
			t.Errorf("join page does not link the versioned stylesheet")
		}
	})

	t.Run("etag revalidation", func(t *testing.T) {
		first := pageDo(t, h, httptest.NewRequest(http.MethodGet, "/static/style.css", nil))
		r := httptest.NewRequest(http.MethodGet, "/static/style.css", nil)
		r.Header.Set("If-None-Match", first.h.Get("ETag"))
		if res := pageDo(t, h, r); res.code != http.StatusNotModified {
			t.Errorf("conditional GET = %d, want 304", res.code)
		}
	})
}

func pageStaticURL(t *testing.T, p *pages, name string) string {
	t.Helper()
	u, err := p.staticURL(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestNewPagesConfig(t *testing.T) {
	s := pageSessions(t, nil)
	tests := []struct {
		name      string
		cfg       pagesConfig
		wantErr   bool
		wantRooms []string
	}{
		{"no sessions", pagesConfig{}, true, nil},
		{"default rooms", pagesConfig{Sessions: s}, false, []string{"Chat Room", "Business Room", "Gaming Room"}},
		{"rooms trimmed and deduplicated", pagesConfig{Sessions: s, Rooms: []string{" A ", "A", "B"}}, false, []string{"A", "B"}},
		{"invalid room", pagesConfig{Sessions: s, Rooms: []string{"a/b"}}, true, nil},
		{"bad origin", pagesConfig{Sessions: s, AllowedOrigins: []string{"http://x.example/path"}}, true, nil},
		{"origins", pagesConfig{Sessions: s, AllowedOrigins: []string{"https://a.example", " ", "http://b.example:8080"}}, false, []string{"Chat Room", "Business Room", "Gaming Room"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newPages(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("newPages err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if strings.Join(p.rooms, "|") != strings.Join(tt.wantRooms, "|") {
				t.Errorf("rooms = %q, want %q", p.rooms, tt.wantRooms)
			}
		})
	}
}

func TestJoinPagePrefill(t *testing.T) {
	h, _ := newTestPages(t)
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"offered room", "?room=Business%20Room", []string{`<option value="Business Room" selected>`, `id="room-other" name="room-other" type="text" value=""`}},
		{"other room", "?room=Caf%C3%A9", []string{`id="room-other" name="room-other" type="text" value="Café"`}},
		{"invalid room ignored", "?room=a%2Fb", []string{`id="room-other" name="room-other" type="text" value=""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := pageDo(t, h, httptest.NewRequest(http.MethodGet, "/"+tt.query, nil))
			for _, want := range tt.want {
				if !strings.Contains(res.body, want) {
					t.Errorf("join page lacks %q", want)
				}
			}
		})
	}
}

// fakeChatSocket is a minimal stand-in for the chat consumer, speaking the frames
// of the wire interface, to drive the browser client.
type fakeChatSocket struct {
	sessions *auth.Sessions

	mu       sync.Mutex
	seq      int
	history  []map[string]any
	conns    map[*websocket.Conn]string
	refuse   bool
	reset    bool
	sinces   []string
	closes   []websocket.StatusCode
	connects int
}

func (f *fakeChatSocket) users() map[string]any {
	var us []map[string]any
	for _, n := range f.conns {
		us = append(us, map[string]any{"name": n})
	}
	return map[string]any{"type": "users", "room": "x", "count": len(us), "users": us}
}

func (f *fakeChatSocket) addMessage(user, text string) map[string]any {
	f.seq++
	m := map[string]any{"type": "message", "id": fmt.Sprintf("%d-0", f.seq), "user": user, "text": text, "time": time.Now().UTC().Format(time.RFC3339)}
	f.history = append(f.history, m)
	return m
}

func (f *fakeChatSocket) broadcast(v any) {
	b, _ := json.Marshal(v)
	for c := range f.conns {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Write(ctx, websocket.MessageText, b)
		cancel()
	}
}

func (f *fakeChatSocket) dropAll(code websocket.StatusCode) {
	f.mu.Lock()
	var cs []*websocket.Conn
	for c := range f.conns {
		cs = append(cs, c)
	}
	f.mu.Unlock()
	for _, c := range cs {
		if code == 0 {
			c.CloseNow()
		} else {
			c.Close(code, "test")
		}
	}
}

func (f *fakeChatSocket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sess, err := f.sessions.FromRequest(r)
	if err != nil {
		http.Error(w, "forbidden", 403)
		return
	}
	f.mu.Lock()
	if f.refuse {
		f.mu.Unlock()
		http.Error(w, "down", 503)
		return
	}
	f.mu.Unlock()
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	since := r.URL.Query().Get("since")
	f.mu.Lock()
	f.connects++
	f.sinces = append(f.sinces, since)
	hist := map[string]any{"type": "history"}
	var msgs []map[string]any
	start := 0
	if since != "" {
		for i, m := range f.history {
			if m["id"] == since {
				start = i + 1
			}
		}
	}
	if f.reset {
		start = 0
		hist["reset"] = true
		f.reset = false
	}
	msgs = append(msgs, f.history[start:]...)
	hist["messages"] = msgs
	if msgs == nil {
		hist["messages"] = []any{}
	}
	f.conns[c] = sess.Nickname
	b, _ := json.Marshal(hist)
	c.Write(r.Context(), websocket.MessageText, b)
	f.broadcast(f.users())
	f.mu.Unlock()
	for {
		_, data, err := c.Read(r.Context())
		if err != nil {
			f.mu.Lock()
			delete(f.conns, c)
			f.closes = append(f.closes, websocket.CloseStatus(err))
			f.mu.Unlock()
			return
		}
		var in struct{ Type, Text, Cid string }
		json.Unmarshal(data, &in)
		f.mu.Lock()
		switch in.Type {
		case "message":
			m := f.addMessage(sess.Nickname, strings.TrimSpace(in.Text))
			if in.Cid != "" {
				m["cid"] = in.Cid // the echo acknowledges the sender's message by its cid
			}
			f.broadcast(m)
		case "ping":
			b, _ := json.Marshal(map[string]any{"type": "pong"})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			c.Write(ctx, websocket.MessageText, b)
			cancel()
		}
		f.mu.Unlock()
	}
}

// TestBrowserClient drives the JS client in chromium against fakeChatSocket:
// join, send on Enter, escaping, reconnect with since, the offline outbox,
// a reset history, error frames, Leave (close 1000, POST /leave) and no
// reconnect after 1008.
func TestBrowserClient(t *testing.T) {
	s := pageSessions(t, nil)
	p, err := newPages(pagesConfig{Sessions: s})
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeChatSocket{sessions: s, conns: map[*websocket.Conn]string{}}
	mux := http.NewServeMux()
	p.register(mux)
	mux.Handle("GET /ws/chat/{room}/", fc)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := browsertest.New(context.Background(), t, browsertest.Options{})
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}

	var logs []string
	evalStr := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("eval %s: %v", js, err)
		}
		return v
	}
	evalInt := func(js string) int {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("eval %s: %v", js, err)
		}
		return v
	}
	waitJS := func(js string) {
		t.Helper()
		err := testkit.Poll(15*time.Second, func() error {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
			if err == nil && !ok {
				err = errors.New("false")
			}
			return err
		})
		if err == nil {
			return
		}
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("body"))
		t.Fatalf("timeout waiting for %s\n%s\n%v", js, html, logs)
	}

	nick := `Zoë <b>x</b>`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#join-form"),
		chromedp.SendKeys("#nickname", nick),
		chromedp.SendKeys("#room-other", "Café ☕"),
		chromedp.Click("#join"),
		chromedp.WaitVisible("#messages"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(`document.getElementById("status").dataset.state === "open" && document.getElementById("status").textContent === "online"`)
	got := evalStr(`document.getElementById("room-name").textContent`)
	if got != "Café ☕" {
		t.Errorf("room-name = %q", got)
	}
	waitJS(`document.querySelectorAll("#users li").length === 1 && document.querySelector("#users li").textContent === ` + jsQuote(nick) + ` && document.getElementById("user-count").textContent === "1"`)

	// send on Enter
	chromedp.Do(ctx, chromedp.SendKeys("#message-input", "hello\r"))
	waitJS(`[...document.querySelectorAll("#messages li.message:not(.pending) span.text")].filter(e => e.textContent === "hello").length === 1 && !document.querySelector("li.pending")`)
	waitJS(`document.querySelector("#messages li.message.own span.user").textContent === ` + jsQuote(nick))

	// HTML from others stays text
	fc.mu.Lock()
	fc.broadcast(fc.addMessage("bob", `<img src=x onerror="document.body.dataset.pwned=1">`))
	fc.broadcast(map[string]any{"type": "notice", "text": "bob has joined the chat", "time": time.Now().UTC().Format(time.RFC3339)})
	fc.mu.Unlock()
	waitJS(`document.querySelectorAll("#messages li.message").length === 2 && !document.querySelector("#messages img") && document.querySelector("li.notice span.text").textContent === "bob has joined the chat"`)
	waitJS(`!document.querySelector("#messages li.message:not(.own)").classList.contains("own") && /\d/.test(document.querySelector("time.time").textContent)`)

	// A mention is "@" and the whole nickname, spaces and all, in any
	// case; its first word alone is not one.
	fc.mu.Lock()
	fc.broadcast(fc.addMessage("bob", "hi @ZOË <B>X</B>, welcome"))
	fc.broadcast(fc.addMessage("bob", "@Zoë alone is someone else"))
	fc.mu.Unlock()
	waitJS(`document.querySelectorAll("#messages li.message").length === 4`)
	if got := evalStr(`[...document.querySelectorAll("#messages li.message.mention mark")].map(m => m.textContent).join("|")`); got != "@ZOË <B>X</B>" {
		t.Errorf("mentions marked %q; want the whole nickname in the first message only", got)
	}

	// offline: refuse reconnects, drop with 1012
	fc.mu.Lock()
	fc.refuse = true
	fc.mu.Unlock()
	fc.dropAll(websocket.StatusServiceRestart)
	waitJS(`document.getElementById("status").dataset.state === "reconnecting" && document.getElementById("status").textContent === "reconnecting…"`)
	chromedp.Do(ctx, chromedp.SendKeys("#message-input", "typed offline\r"))
	waitJS(`document.querySelectorAll("li.pending").length === 1 && document.querySelector("li.pending span.text").textContent === "typed offline"`)
	fc.mu.Lock()
	lastID := fc.history[len(fc.history)-1]["id"].(string)
	fc.addMessage("carol", "while you were away")
	fc.refuse = false
	fc.mu.Unlock()
	waitJS(`document.getElementById("status").dataset.state === "open"`)
	waitJS(`!document.querySelector("li.pending") && [...document.querySelectorAll("#messages li.message span.text")].map(e => e.textContent).join("|") === "hello|<img src=x onerror=\"document.body.dataset.pwned=1\">|hi @ZOË <B>X</B>, welcome|@Zoë alone is someone else|while you were away|typed offline"`)
	fc.mu.Lock()
	if since := fc.sinces[len(fc.sinces)-1]; since != lastID {
		t.Errorf("reconnect since = %q, want %q (all: %q)", since, lastID, fc.sinces)
	}
	fc.reset = true
	fc.mu.Unlock()

	// reset history after an abrupt drop: notice, no duplicates
	fc.dropAll(0)
	waitJS(`document.getElementById("status").dataset.state === "open" && [...document.querySelectorAll("li.notice span.text")].some(e => /missing/.test(e.textContent))`)
	// Whatever the server sent before a marker has been shown once the
	// marker is.
	fc.mu.Lock()
	fc.broadcast(map[string]any{"type": "notice", "text": "marker after the reset", "time": time.Now().UTC().Format(time.RFC3339)})
	fc.mu.Unlock()
	waitJS(`[...document.querySelectorAll("li.notice span.text")].some(e => e.textContent === "marker after the reset")`)
	n := evalInt(`document.querySelectorAll("#messages li.message").length`)
	if n != 6 {
		t.Errorf("after reset %d messages, want 6", n)
	}
	n = evalInt(`new Set([...document.querySelectorAll("#messages li.message")].map(e => e.dataset.id)).size`)
	if n != 6 {
		t.Errorf("distinct ids %d", n)
	}

	// error frame
	fc.mu.Lock()
	fc.broadcast(map[string]any{"type": "error", "code": "rate_limited", "text": "slow down"})
	fc.mu.Unlock()
	waitJS(`!document.getElementById("toast").hidden`)

	// Leave: close 1000, POST /leave, back at /
	fc.mu.Lock()
	closesBefore := len(fc.closes)
	fc.mu.Unlock()
	chromedp.Do(ctx, chromedp.Click("#leave"))
	waitJS(`location.pathname === "/" && !!document.getElementById("join-form")`)
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if len(fc.closes) == closesBefore {
			return errors.New("the socket's end not seen yet")
		}
		if last := fc.closes[len(fc.closes)-1]; last != websocket.StatusNormalClosure {
			t.Errorf("leave close code = %v (all %v)", last, fc.closes)
		}
		return nil
	}, "the leave's close 1000")
	got = evalStr(`document.body.dataset.pwned || ""`)
	if got != "" {
		t.Errorf("XSS ran")
	}

	// 1008: no reconnect
	if err := chromedp.Do(ctx,
		chromedp.SendKeys("#nickname", "dan"),
		chromedp.Click("#join"),
		chromedp.WaitVisible("#messages"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(`document.getElementById("status").dataset.state === "open"`)
	fc.mu.Lock()
	before := fc.connects
	fc.mu.Unlock()
	fc.dropAll(websocket.StatusPolicyViolation)
	waitJS(`document.getElementById("status").dataset.state === "closed"`)
	// Real time is what is tested: no reconnect within three times the
	// first backoff (500 ms, jittered up to 750 ms).
	time.Sleep(1500 * time.Millisecond)
	fc.mu.Lock()
	if fc.connects != before {
		t.Errorf("reconnected after 1008")
	}
	fc.mu.Unlock()

}

func jsQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
