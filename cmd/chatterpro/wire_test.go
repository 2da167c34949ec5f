package main_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// postAPI posts a message to the publish API of n.
func postAPI(ctx context.Context, t *testing.T, n *testnode.Node, room, token, body string) *testnode.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL()+"/api/rooms/"+url.PathEscape(room)+"/messages", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	r, err := testnode.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The wire additions across two nodes on Redis, through the real binary:
// the publish API (token from the environment), client IDs, typing and
// paging back to --history.
func TestWireAdditionsOnRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	opts := testnode.Options{
		Layer: "redis://" + rs.Addr() + "/0",
		Args:  []string{"--history", "60", "--rate", "0"},
		Env:   []string{"CHATTERPRO_API_TOKEN=wire-token"},
	}
	a, b := testnode.Start(t, opts), testnode.Start(t, opts)
	ctx := timeout(t, 40*time.Second)
	const room = "Wire Room"
	alice := connect(ctx, t, a.URL(), "Alice", room)
	bob := connect(ctx, t, b.URL(), "Bob", room)

	// Publish API: posted on A, heard on B, marked as a bot's.
	if r := postAPI(ctx, t, a, room, "", `{"user":"Bot","text":"x"}`); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST without the token = %d", r.StatusCode)
	}
	r := postAPI(ctx, t, a, room, "wire-token", `{"user":"Bot","text":"deployed"}`)
	var posted testnode.Frame
	if r.StatusCode != http.StatusCreated || json.Unmarshal([]byte(r.Body), &posted) != nil || !posted.Bot || posted.ID == "" {
		t.Fatalf("POST = %d %s", r.StatusCode, r.Body)
	}
	if f, err := bob.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "deployed" }); err != nil || f.ID != posted.ID || !f.Bot {
		t.Fatalf("Bob: %v, %v; want the posted message", f, err)
	}

	// A cid sent again from another tab on the other node: one message.
	if err := alice.SendRaw(ctx, []byte(`{"type":"message","text":"once","cid":"c-1"}`)); err != nil {
		t.Fatal(err)
	}
	first, err := alice.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == "once" })
	if err != nil || first.CID != "c-1" {
		t.Fatalf("Alice: %v, %v", first, err)
	}
	tab := alice.Tab()
	if err := tab.DialTo(ctx, b.URL(), first.ID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.Close(1000) })
	if err := tab.SendRaw(ctx, []byte(`{"type":"message","text":"once","cid":"c-1"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := tab.Await(ctx, "message", nil); err != nil || f.ID != first.ID {
		t.Fatalf("the repeat got %v, %v; want the original %v", f, err, first)
	}
	got := messagesUntil(ctx, t, bob, 300*time.Millisecond, hasAll("once"))
	if len(got) != 1 {
		t.Fatalf("Bob got %q; want the message once", texts(got))
	}

	// Typing: Bob on B hears Alice on A.
	if err := alice.SendRaw(ctx, []byte(`{"type":"typing"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := bob.Await(ctx, "typing", nil); err != nil || string(f.Raw) != `{"type":"typing","user":"Alice"}` {
		t.Fatalf("Bob: %v, %v; want Alice typing", f, err)
	}

	// Paging back: the room keeps 60 (--history).
	for i := range 70 {
		if r := postAPI(ctx, t, b, room, "wire-token", `{"user":"Bot","text":"n`+string(rune('a'+i%26))+`"}`); r.StatusCode != http.StatusCreated {
			t.Fatalf("POST %d = %d %s", i, r.StatusCode, r.Body)
		}
	}
	carol := connect(ctx, t, b.URL(), "Carol", room)
	h := carol.Received()[0]
	if len(h.Messages) != 50 {
		t.Fatalf("Carol's history has %d messages, want 50", len(h.Messages))
	}
	if err := carol.SendRaw(ctx, []byte(`{"type":"older","before":"`+h.Messages[0].ID+`"}`)); err != nil {
		t.Fatal(err)
	}
	older, err := carol.Await(ctx, "older", nil)
	if err != nil || len(older.Messages) != 10 || older.More {
		t.Fatalf("older: %d messages, more %v, %v; want the 10 more the room keeps", len(older.Messages), older.More, err)
	}

	// The room directory, on either node, counts the three sessions (Alice
	// has two tabs), after the configured rooms.
	want := `{"rooms":[{"name":"Chat Room","online":0},{"name":"Business Room","online":0},{"name":"Gaming Room","online":0},{"name":"Wire Room","online":3}]}`
	for _, n := range []*testnode.Node{a, b} {
		var body string
		for deadline := time.Now().Add(10 * time.Second); body != want && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			r, err := n.Get(ctx, "/rooms")
			if err != nil {
				t.Fatal(err)
			}
			body = r.Body
		}
		if body != want {
			t.Fatalf("GET /rooms = %s, want %s", body, want)
		}
	}
}
