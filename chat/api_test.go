package chat

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

const testToken = "s3cret-api-token"

func (n *testNode) post(t *testing.T, room, auth, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/api/rooms/"+url.PathEscape(room)+"/messages", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	n.app.ServeHTTP(w, r)
	return w
}

// A message posted to the API on one node is recorded and reaches the
// room on every node, marked "bot":true; the answer is its frame.
func TestPublishAPI(t *testing.T) {
	eachLayer(t, func(c *Config) { c.APIToken = testToken }, func(t *testing.T, n1, n2 *testNode) {
		ann := n2.join(t, "ann", "s-ann", "Chat Room", "")
		ann.joinFrames("ann")
		w := n1.post(t, "Chat Room", "Bearer "+testToken, `{"user":" Deploy Bot ","text":" shipped v2 "}`)
		if w.Code != http.StatusCreated || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("POST = %d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
		}
		var got frame
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got.Type != "message" || got.ID == "" || got.User != "Deploy Bot" || got.Text != "shipped v2" || !got.Bot || got.Time == "" {
			t.Fatalf("answer %s", w.Body)
		}
		f := ann.await("message", "shipped v2")
		if f.ID != got.ID || !f.Bot || f.User != "Deploy Bot" {
			t.Fatalf("delivered %+v, want the answered frame %s", f, w.Body)
		}
		recent, err := n2.app.history.Recent(ctxT(t), "Chat Room", 5)
		if err != nil || len(recent) != 1 || recent[0].ID != got.ID {
			t.Fatalf("history %v, %v; want the posted message", recent, err)
		}
	})
}

func TestPublishAPIRefusals(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.APIToken = testToken })
	ok := `{"user":"bot","text":"hi"}`
	cases := []struct {
		name, room, auth, body string
		status                 int
		code                   string
	}{
		{"no token", "r", "", ok, 401, "unauthorized"},
		{"wrong token", "r", "Bearer nope", ok, 401, "unauthorized"},
		{"token prefix", "r", "Bearer " + testToken[:5], ok, 401, "unauthorized"},
		{"other scheme", "r", "Basic " + testToken, ok, 401, "unauthorized"},
		{"not JSON", "r", "Bearer " + testToken, `hi`, 400, codeBadJSON},
		{"two objects", "r", "Bearer " + testToken, ok + ok, 400, codeBadJSON},
		{"too big", "r", "Bearer " + testToken, `{"user":"bot","text":"` + strings.Repeat("x", 17<<10) + `"}`, 400, codeBadJSON},
		{"no user", "r", "Bearer " + testToken, `{"text":"hi"}`, 400, "bad_user"},
		{"bad user", "r", "Bearer " + testToken, `{"user":"a\tb","text":"hi"}`, 400, "bad_user"},
		{"long user", "r", "Bearer " + testToken, `{"user":"` + strings.Repeat("u", 33) + `","text":"hi"}`, 400, "bad_user"},
		{"no text", "r", "Bearer " + testToken, `{"user":"bot"}`, 400, codeBadText},
		{"blank text", "r", "Bearer " + testToken, `{"user":"bot","text":"  "}`, 400, codeBadText},
		{"long text", "r", "Bearer " + testToken, `{"user":"bot","text":"` + strings.Repeat("é", 2001) + `"}`, 400, codeBadText},
		{"bad room", strings.Repeat("r", 65), "Bearer " + testToken, ok, 400, "bad_room"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := n.post(t, tc.room, tc.auth, tc.body)
			var f frame
			_ = json.Unmarshal(w.Body.Bytes(), &f)
			if w.Code != tc.status || f.Code != tc.code || f.Text == "" {
				t.Fatalf("POST = %d %s, want %d with code %s", w.Code, w.Body, tc.status, tc.code)
			}
		})
	}
	recent, err := n.app.history.Recent(ctxT(t), "r", 5)
	if err != nil || len(recent) != 0 {
		t.Fatalf("refused posts recorded %d messages (%v)", len(recent), err)
	}
}

// Without a token the API does not exist.
func TestPublishAPIOff(t *testing.T) {
	n := newNode(t, nil, nil)
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		if w := n.post(t, "r", auth, `{"user":"bot","text":"hi"}`); w.Code != http.StatusNotFound {
			t.Fatalf("POST with %q to a node without a token = %d, want 404", auth, w.Code)
		}
	}
}

func TestPublishAPIRateLimited(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.APIToken = testToken; c.Rate = 1 }) // burst 2
	for i, want := range []int{201, 201, 429} {
		w := n.post(t, "r", "Bearer "+testToken, `{"user":"bot","text":"hi"}`)
		if w.Code != want {
			t.Fatalf("post %d = %d %s, want %d", i, w.Code, w.Body, want)
		}
		if want == 429 && w.Header().Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	// Another room has a limit of its own.
	if w := n.post(t, "other", "Bearer "+testToken, `{"user":"bot","text":"hi"}`); w.Code != 201 {
		t.Fatalf("post to another room = %d", w.Code)
	}
}

func TestPublishAPIUnavailable(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.APIToken = testToken })
	n.layer.(*flakyLayer).down.Store(true)
	if w := n.post(t, "r", "Bearer "+testToken, `{"user":"bot","text":"hi"}`); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST while the layer is down = %d %s, want 503", w.Code, w.Body)
	}
}
