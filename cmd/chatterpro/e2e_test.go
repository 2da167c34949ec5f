package main_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// The tests of this package run the real binary (built once by testnode)
// over real sockets, with the memory layer or a real redis-server.

func TestMain(m *testing.M) { testnode.Main(m) }

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	return testkit.ContextWithin(t, d)
}

// connect joins room on baseURL as nickname, opens the socket and checks
// the first frames: history, users (listing the joiner) and the welcome.
func connect(ctx context.Context, t *testing.T, baseURL, nickname, room string) *testnode.Client {
	t.Helper()
	c, err := testnode.Connect(ctx, baseURL, nickname, room)
	if err != nil {
		t.Fatalf("%s joining %q on %s: %v", nickname, room, baseURL, err)
	}
	t.Cleanup(func() { c.Close(websocket.StatusNormalClosure) })
	if f, err := c.Next(ctx); err != nil || f.Type != "history" {
		t.Fatalf("%s: first frame %v, %v; want history", nickname, f, err)
	}
	if f, err := c.Next(ctx); err != nil || f.Type != "users" || f.Room != room || !f.HasUser(nickname) {
		t.Fatalf("%s: second frame %v, %v; want users of %q listing %s", nickname, f, err, room, nickname)
	}
	if f, err := c.Next(ctx); err != nil || f.Type != "notice" || f.Text != "Welcome to ChatterPro!" {
		t.Fatalf("%s: third frame %v, %v; want the welcome notice", nickname, f, err)
	}
	return c
}

func get(ctx context.Context, t *testing.T, n *testnode.Node, path string, cookie *http.Cookie) *testnode.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(&http.Cookie{Name: cookie.Name, Value: cookie.Value})
	}
	r, err := testnode.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

func TestPagesAndProbes(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.Options{Layer: "memory://"})
	ctx := timeout(t, 20*time.Second)

	r := get(ctx, t, n, "/", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", r.StatusCode)
	}
	for _, room := range []string{"Chat Room", "Business Room", "Gaming Room", `id="nickname"`, `id="room"`, `id="join"`} {
		if !strings.Contains(r.Body, room) {
			t.Errorf("join page lacks %q", room)
		}
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if r := get(ctx, t, n, path, nil); r.StatusCode != http.StatusOK || !strings.Contains(r.Body, want) {
			t.Errorf("GET %s = %d %q", path, r.StatusCode, r.Body)
		}
	}
	if r := get(ctx, t, n, "/chat/Chat%20Room", nil); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Errorf("chat page without session = %d to %q; want 303 to /", r.StatusCode, r.Header.Get("Location"))
	}

	ada := connect(ctx, t, n.URL(), "Ada", "Chat Room")
	page := get(ctx, t, n, "/chat/Chat%20Room", ada.Cookie)
	if page.StatusCode != http.StatusOK || !strings.Contains(page.Body, `id="messages"`) || !strings.Contains(page.Body, "Ada") {
		t.Errorf("chat page = %d, lacks #messages or the nickname", page.StatusCode)
	}
	if err := ada.Send(ctx, "  hello, world  "); err != nil {
		t.Fatal(err)
	}
	m, err := ada.Await(ctx, "message", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.User != "Ada" || m.Text != "hello, world" || m.ID == "" {
		t.Errorf("message = %v; want Ada's trimmed text with an id", m)
	}
	if ts, err := time.Parse(time.RFC3339, m.Time); err != nil || !strings.HasSuffix(m.Time, "Z") || time.Since(ts) > time.Minute {
		t.Errorf("message time %q: not recent RFC 3339 UTC (%v)", m.Time, err)
	}
	if err := ada.SendRaw(ctx, []byte(`{"type":"nope"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := ada.Await(ctx, "error", nil); err != nil || f.Code != "unknown_type" {
		t.Errorf("unknown type: %v, %v; want error unknown_type", f, err)
	}

	// A second user sees the history.
	bob, err := testnode.Connect(ctx, n.URL(), "Bob", "Chat Room")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close(websocket.StatusNormalClosure)
	h, err := bob.Await(ctx, "history", nil)
	if err != nil || len(h.Messages) != 1 || h.Messages[0].ID != m.ID || h.Messages[0].Text != "hello, world" {
		t.Errorf("Bob's history = %v, %v; want Ada's message", h, err)
	}

	// A malformed since gets the latest messages with reset.
	if err := bob.Dial(ctx, "not-an-id"); err != nil {
		t.Fatal(err)
	}
	if h, err := bob.Await(ctx, "history", nil); err != nil || !h.Reset || len(h.Messages) != 1 {
		t.Errorf("history for a malformed since = %v, %v; want the latest message with reset", h, err)
	}

	// Invalid join input: 400 with the form.
	if _, err := testnode.Join(ctx, n.URL(), "   ", "Chat Room"); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("joining with a blank nickname: %v; want HTTP 400", err)
	}
	if _, err := testnode.Join(ctx, n.URL(), "Ada", "a/b"); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("joining room a/b: %v; want HTTP 400", err)
	}

	r = get(ctx, t, n, "/metrics", nil)
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "chatterpro_") {
		t.Errorf("GET /metrics = %d without chatterpro_ metrics:\n%.500s", r.StatusCode, r.Body)
	}
}

func TestWebsocketRefusals(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.Options{Layer: "memory://", Args: []string{"--allowed-origins", "https://chat.example.com"}})
	ctx := timeout(t, 20*time.Second)
	ada, err := testnode.Join(ctx, n.URL(), "Ada", "Chat Room")
	if err != nil {
		t.Fatal(err)
	}

	tampered := *ada.Cookie
	b := []byte(tampered.Value)
	b[len(b)/2] ^= 1
	tampered.Value = string(b)

	long := strings.Repeat("r", 65)
	tests := []struct {
		name   string
		cookie *http.Cookie
		origin string
		path   string // websocket path; defaults to Ada's room
		want   int    // HTTP status; 0: accepted
	}{
		{name: "no cookie", want: http.StatusForbidden},
		{name: "tampered cookie", cookie: &tampered, want: http.StatusForbidden},
		{name: "foreign origin", cookie: ada.Cookie, origin: "http://evil.example", want: http.StatusForbidden},
		{name: "allowed origin", cookie: ada.Cookie, origin: "https://chat.example.com"},
		{name: "own origin", cookie: ada.Cookie, origin: n.URL()},
		{name: "no origin", cookie: ada.Cookie},
		{name: "slash in room", cookie: ada.Cookie, path: "/ws/chat/a%2Fb/", want: http.StatusBadRequest},
		{name: "65 character room", cookie: ada.Cookie, path: "/ws/chat/" + long + "/", want: http.StatusBadRequest},
		{name: "64 character room", cookie: ada.Cookie, path: "/ws/chat/" + long[:64] + "/"},
		{name: "control character in room", cookie: ada.Cookie, path: "/ws/chat/a%0Ab/", want: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ada.Tab()
			c.Cookie = tt.cookie
			if tt.origin != "" {
				c.Header.Set("Origin", tt.origin)
			}
			u := testnode.WebsocketURL(n.URL(), c.Room, "")
			if tt.path != "" {
				u = "ws://" + n.Addr() + tt.path
			}
			err := c.DialURL(ctx, u)
			if tt.want == 0 {
				if err != nil {
					t.Fatalf("dial: %v; want accepted", err)
				}
				defer c.Close(websocket.StatusNormalClosure)
				if f, err := c.Next(ctx); err != nil || f.Type != "history" {
					t.Fatalf("first frame %v, %v; want history", f, err)
				}
				return
			}
			if got := testnode.HandshakeStatus(err); got != tt.want {
				t.Fatalf("dial: %v; want HTTP %d", err, tt.want)
			}
		})
	}
}

func TestFrameOverLimitCloses1009(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.Options{Layer: "memory://"})
	ctx := timeout(t, 20*time.Second)
	ada := connect(ctx, t, n.URL(), "Ada", "Chat Room")
	big := `{"type":"message","text":"` + strings.Repeat("x", 17<<10) + `"}`
	_ = ada.SendRaw(ctx, []byte(big)) // the server may close before the write ends
	for {
		f, err := ada.Next(ctx)
		if err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
				t.Fatalf("connection ended with %v (%v); want close 1009", got, err)
			}
			return
		}
		if f.Type == "message" {
			t.Fatalf("an over-limit frame was accepted: %.100s", f.Raw)
		}
	}
}

func TestSIGTERMCloses1012AndExits(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, testnode.Options{Layer: "memory://"})
	ctx := timeout(t, 20*time.Second)
	clients := []*testnode.Client{
		connect(ctx, t, n.URL(), "Ada", "Chat Room"),
		connect(ctx, t, n.URL(), "Bob", "Chat Room"),
		connect(ctx, t, n.URL(), "Cy", "Gaming Room"),
	}
	n.Term()
	for _, c := range clients {
		_, err := c.Await(ctx, "never", nil)
		if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
			t.Errorf("%s: connection ended with %v (%v); want close 1012", c.Nickname, got, err)
		}
	}
	code, took, err := n.Wait(10 * time.Second)
	if err != nil {
		t.Fatalf("the node did not exit within 10 s of SIGTERM\n%s", n.Log())
	}
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM; want 0\n%s", code, n.Log())
	}
	t.Logf("exited %v after SIGTERM", took)
}

// messagesUntil collects c's message frames until have returns true for
// them, then keeps listening for settle to catch duplicates.
func messagesUntil(ctx context.Context, t *testing.T, c *testnode.Client, settle time.Duration, have func([]testnode.Frame) bool) []testnode.Frame {
	t.Helper()
	var got []testnode.Frame
	for !have(got) {
		f, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("%s: waiting for messages (have %v): %v", c.Nickname, got, err)
		}
		if f.Type == "message" {
			got = append(got, f)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, settle)
	defer cancel()
	for {
		f, err := c.Next(sctx)
		if err != nil {
			return got
		}
		if f.Type == "message" {
			got = append(got, f)
		}
	}
}

func texts(fs []testnode.Frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Text
	}
	return out
}

func hasAll(want ...string) func([]testnode.Frame) bool {
	return func(fs []testnode.Frame) bool {
		ts := texts(fs)
		for _, w := range want {
			if !slices.Contains(ts, w) {
				return false
			}
		}
		return true
	}
}

func isNotice(text string) func(testnode.Frame) bool {
	return func(f testnode.Frame) bool { return f.Text == text }
}

func TestTwoNodesOnRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	a := testnode.Start(t, testnode.Options{Layer: layer})
	b := testnode.Start(t, testnode.Options{Layer: layer})
	ctx := timeout(t, 40*time.Second)
	const room, other = "Redis Room", "Other Room"

	alice := connect(ctx, t, a.URL(), "Alice", room)
	carol := connect(ctx, t, a.URL(), "Carol", other)
	bob := connect(ctx, t, b.URL(), "Bob", room)

	// Bob's first users frame (checked by connect) came after Alice
	// joined, so it lists her; Alice hears of Bob.
	if _, err := alice.Await(ctx, "notice", isNotice("Bob has joined the chat")); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	if f, err := alice.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("Bob") }); err != nil {
		t.Fatalf("Alice: %v", err)
	} else if f.Count != 2 || !slices.Equal(f.Names(), []string{"Alice", "Bob"}) || f.Room != room {
		t.Errorf("Alice's users frame %v; want Alice and Bob", f)
	}
	for _, f := range bob.Received() {
		if f.Type == "users" && !f.HasUser("Alice") {
			t.Errorf("Bob's users frame %v lacks Alice", f)
		}
	}

	if err := alice.Send(ctx, "hi from A"); err != nil {
		t.Fatal(err)
	}
	if err := bob.Send(ctx, "hi from B"); err != nil {
		t.Fatal(err)
	}
	both := hasAll("hi from A", "hi from B")
	for _, c := range []*testnode.Client{alice, bob} {
		got := messagesUntil(ctx, t, c, 500*time.Millisecond, both)
		if len(got) != 2 {
			t.Errorf("%s got %d messages %q; want each of the two once", c.Nickname, len(got), texts(got))
		}
		ids := map[string]bool{}
		for _, m := range got {
			ids[m.ID] = true
			if want := map[string]string{"hi from A": "Alice", "hi from B": "Bob"}[m.Text]; m.User != want {
				t.Errorf("%s: message %v from %q; want %q", c.Nickname, m, m.User, want)
			}
		}
		if len(ids) != len(got) {
			t.Errorf("%s: duplicate IDs in %v", c.Nickname, got)
		}
	}

	// Bob's connection drops (not a leave) and comes back on node A with
	// since=<last id>: he gets exactly what he missed.
	last := bob.Received()
	var lastID string
	for _, f := range last {
		if f.Type == "message" {
			lastID = f.ID
		}
	}
	bob.Close(websocket.StatusGoingAway)
	missed := []string{"missed 1", "missed 2", "missed 3"}
	for _, m := range missed {
		if err := alice.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	messagesUntil(ctx, t, alice, 0, hasAll(missed...))
	if err := bob.DialTo(ctx, a.URL(), lastID); err != nil {
		t.Fatal(err)
	}
	h, err := bob.Await(ctx, "history", nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Reset || !slices.Equal(texts(h.Messages), missed) {
		t.Errorf("Bob's resumed history %v (reset %v); want exactly %q", texts(h.Messages), h.Reset, missed)
	}
	if err := alice.Send(ctx, "after resume"); err != nil {
		t.Fatal(err)
	}
	if got := messagesUntil(ctx, t, bob, 300*time.Millisecond, hasAll("after resume")); !slices.Equal(texts(got), []string{"after resume"}) {
		t.Errorf("Bob's live messages after resume %q; want only the new one", texts(got))
	}
	messagesUntil(ctx, t, alice, 300*time.Millisecond, hasAll("after resume"))
	for _, f := range alice.Received() {
		if f.Type == "notice" && strings.HasPrefix(f.Text, "Bob has") && f.Text != "Bob has joined the chat" {
			t.Errorf("Alice got %q for a reconnect within the grace period", f.Text)
		}
	}
	if n := countNotices(alice, "Bob has joined the chat"); n != 1 {
		t.Errorf("Alice got %d join notices for Bob; want 1 (the reconnect is not a join)", n)
	}

	// Dave joins on node B and leaves (close 1000): Alice hears at once.
	dave := connect(ctx, t, b.URL(), "dave", room)
	if _, err := alice.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("dave") }); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	leaveQuickly(ctx, t, alice, dave, "Alice", "Bob")

	// Carol, in another room on the same node, saw none of it.
	for _, f := range carol.Received() {
		switch {
		case f.Type == "message", f.Type == "notice" && f.Text != "Welcome to ChatterPro!":
			t.Errorf("Carol in %q got %v", other, f)
		case f.Type == "users" && (f.Room != other || f.Count != 1):
			t.Errorf("Carol got users frame %v", f)
		}
	}
}

// leaveQuickly closes leaver with 1000 and checks that watcher gets the
// "has left" notice and a users frame listing exactly stay within 3 s.
func leaveQuickly(ctx context.Context, t *testing.T, watcher, leaver *testnode.Client, stay ...string) {
	t.Helper()
	left := time.Now()
	leaver.Close(websocket.StatusNormalClosure)
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	gone := leaver.Nickname + " has left the chat"
	if _, err := watcher.Await(lctx, "notice", isNotice(gone)); err != nil {
		t.Fatalf("%s after %s left with 1000: no %q within 3 s: %v", watcher.Nickname, leaver.Nickname, gone, err)
	}
	f, err := watcher.Await(lctx, "users", func(f testnode.Frame) bool { return !f.HasUser(leaver.Nickname) })
	if err != nil {
		t.Fatalf("%s after %s left with 1000: no users frame without %[2]s within 3 s: %v", watcher.Nickname, leaver.Nickname, err)
	}
	if !slices.Equal(f.Names(), stay) || f.Count != len(stay) {
		t.Errorf("users after %s left: %v; want %q", leaver.Nickname, f, stay)
	}
	t.Logf("%s's departure seen after %v", leaver.Nickname, time.Since(left))
}

// A session that lost its connection and resumed on another node within
// the grace period, then leaves with 1000, is gone at once: the lost
// connection's grace entry must not keep it listed.
func TestLeaveAfterResumeOnAnotherNode(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	a := testnode.Start(t, testnode.Options{Layer: layer})
	b := testnode.Start(t, testnode.Options{Layer: layer})
	ctx := timeout(t, 20*time.Second)
	const room = "Resume Room"

	alice := connect(ctx, t, a.URL(), "Alice", room)
	bob := connect(ctx, t, b.URL(), "Bob", room)
	if _, err := alice.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("Bob") }); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	bob.Close(websocket.StatusGoingAway) // lost, not left
	if err := bob.DialTo(ctx, a.URL(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Await(ctx, "notice", isNotice("Welcome to ChatterPro!")); err != nil {
		t.Fatal(err)
	}
	leaveQuickly(ctx, t, alice, bob, "Alice")
	if n := countNotices(alice, "Bob has joined the chat"); n != 1 {
		t.Errorf("Alice got %d join notices for Bob; want 1", n)
	}
}

func countNotices(c *testnode.Client, text string) int {
	n := 0
	for _, f := range c.Received() {
		if f.Type == "notice" && f.Text == text {
			n++
		}
	}
	return n
}

func TestEnvironmentVariables(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	env := []string{"CHATTERPRO_LAYER=redis://" + rs.Addr() + "/0", "CHATTERPRO_ROOMS=Env Room,Other"}
	a := testnode.Start(t, testnode.Options{AddrFromEnv: true, Env: env})
	b := testnode.Start(t, testnode.Options{AddrFromEnv: true, Env: env})
	ctx := timeout(t, 20*time.Second)
	if r := get(ctx, t, a, "/", nil); !strings.Contains(r.Body, "Env Room") {
		t.Errorf("join page does not offer the room of CHATTERPRO_ROOMS")
	}
	// A message crossing from A to B proves both use the same Redis.
	ada := connect(ctx, t, a.URL(), "Ada", "Env Room")
	bob := connect(ctx, t, b.URL(), "Bob", "Env Room")
	if err := ada.Send(ctx, "via redis"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "via redis" }); err != nil {
		t.Fatalf("Bob on node B: %v\n--- A ---\n%s\n--- B ---\n%s", err, a.Log(), b.Log())
	}
}
