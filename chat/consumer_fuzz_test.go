package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// A client frame is whatever a stranger writes on the socket. Each one is
// answered by exactly one frame: a chat message whose text passed
// ValidText (sent by this user, to the room), a pong to a ping, an older
// page, or an error frame with one of the documented codes; a typing
// signal by none (it goes to the others); never a panic or a closed
// connection. The frame after it, a valid message, is still answered.
func FuzzReceive(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","text":"hi"}`, `{"type":"message","text":"  spaced  "}`,
		`{"type":"message","text":""}`, `{"type":"message"}`, `{"type":"typing"}`, `{"type":"ping"}`, `{"type":"older","before":"1-1"}`, `{"text":"no type"}`,
		`{"type":null,"text":"x"}`, `{"type":"message","text":123}`, `{"TYPE":"message","Text":"case"}`,
		`[]`, `null`, `"message"`, `{`, ``, `{"type":"message","text":"a","text":"b"}`,
		`{"type":"message","text":"\u0000\ud800"}`, "{\"type\":\"message\",\"text\":\"\xff\"}",
		`{"type":"message","text":"` + strings.Repeat("é", 2001) + `"}`,
	} {
		f.Add(s)
	}
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close(context.Background()) })
	app, err := New(Config{Layer: mem, Secret: []byte("0123456789abcdef0123456789abcdef"), UsersInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		app.Shutdown(ctx)
	})
	codes := map[string]bool{codeBadJSON: true, codeUnknownType: true, codeBadText: true, codeBadID: true, codeRateLimited: true}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, in string) {
		i := n.Add(1)
		nick := fmt.Sprintf("fuzzer%d", i)
		com := consumertest.New(t, app.newConsumer, consumertest.Options{
			Layer: mem, Server: app.server,
			Scope: consumer.Scope{
				Path: "/ws/chat/fuzz/", Params: []consumer.Param{{Name: "room", Value: "fuzz"}}, Query: map[string][]string{},
				User: &consumer.User{Name: nick, Session: nick},
			},
		})
		ctx := testkit.ContextWithin(t, 10*time.Second)
		if err := com.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		marker := fmt.Sprintf("marker %d", i)
		if err := com.SendText(ctx, in); err != nil {
			t.Fatal(err)
		}
		if err := com.SendText(ctx, `{"type":"message","text":"`+marker+`"}`); err != nil {
			t.Fatal(err)
		}
		var answers []frame
		for {
			b, err := com.Receive(ctx)
			if err != nil {
				t.Fatalf("frame %q: no answer to the marker after it: %v (answers so far %+v)", in, err, answers)
			}
			var fr frame
			if err := json.Unmarshal(b, &fr); err != nil {
				t.Fatalf("the server sent a frame that is not JSON: %q", b)
			}
			if fr.Type == "message" && fr.Text == marker {
				break
			}
			if fr.Type == "message" || fr.Type == "error" || fr.Type == "pong" || fr.Type == "older" {
				answers = append(answers, fr)
			}
		}
		if frameOfType(in, "typing") {
			if len(answers) != 0 {
				t.Fatalf("typing frame %q got answers %+v, want none", in, answers)
			}
			if err := com.Disconnect(ctx, consumer.StatusNormal); err != nil {
				t.Fatal(err)
			}
			return
		}
		if len(answers) != 1 {
			t.Fatalf("frame %q got %d answers, want 1: %+v", in, len(answers), answers)
		}
		switch a := answers[0]; a.Type {
		case "error":
			if !codes[a.Code] || a.Text == "" {
				t.Fatalf("frame %q answered with error %q %q, not a documented code", in, a.Code, a.Text)
			}
		case "pong":
			if !frameOfType(in, "ping") {
				t.Fatalf("frame %q answered with a pong", in)
			}
		case "older":
			if !frameOfType(in, "older") {
				t.Fatalf("frame %q answered with an older page", in)
			}
		case "message":
			if v, err := ValidText(a.Text); err != nil || v != a.Text || a.User != nick || a.ID == "" {
				t.Fatalf("frame %q became message %+v: text not as ValidText returns it (%v), or not from %s", in, a, err, nick)
			}
			if !messageFrame(in) {
				t.Fatalf("frame %q, not a JSON message frame, was sent on as %+v", in, a)
			}
		}
		if err := com.Disconnect(ctx, consumer.StatusNormal); err != nil {
			t.Fatal(err)
		}
	})
}

// messageFrame reports whether s is a JSON object with a "type" key (in
// any letter case, as encoding/json matches) holding "message".
func messageFrame(s string) bool { return frameOfType(s, "message") }

// frameOfType reports whether s is a JSON object whose "type" (as
// encoding/json matches keys: the last one, in any letter case) is typ.
func frameOfType(s, typ string) bool {
	var f struct{ Type *string }
	return json.Unmarshal([]byte(s), &f) == nil && f.Type != nil && *f.Type == typ
}
