package chat

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/internal/ssetest"
)

// sseChat serves n's chat over real HTTP and joins nick: it returns the
// room's route and the session cookie as a header.
func sseChat(t *testing.T, n *testNode, nick, room string) (route string, h http.Header) {
	t.Helper()
	hs := httptest.NewServer(n.app)
	t.Cleanup(hs.Close)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(hs.URL+"/join", url.Values{"nickname": {nick}, "room": {room}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "chatterpro_session" {
			return hs.URL + "/ws/chat/" + url.PathEscape(room) + "/", http.Header{"Cookie": {c.String()}}
		}
	}
	t.Fatalf("POST /join: %d, no session cookie", resp.StatusCode)
	return "", nil
}

// awaitSSE returns the next frame of type typ, dropping the others.
func awaitSSE(t *testing.T, st *ssetest.Stream, typ string) frame {
	t.Helper()
	for {
		data, err := st.Frame(ctxT(t))
		if err != nil {
			t.Fatalf("waiting for a %q frame: %v", typ, err)
		}
		var f frame
		if err := json.Unmarshal([]byte(data), &f); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

// The chat, unchanged, over the fallback transport: messages go both ways,
// a stream opened with ?since= gets what came after it, a session's
// stream refuses another session's POSTs, and no session is 403 as on a
// websocket.
func TestChatOverSSE(t *testing.T) {
	n := newNode(t, nil, nil)
	route, ann := sseChat(t, n, "ann", "Chat Room")
	st, err := ssetest.Open(ctxT(t), nil, route, ann)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	awaitSSE(t, st, "history")
	var ids []string
	for i, text := range []string{"one", "two", "three"} {
		code, err := st.Send(ctxT(t), fmt.Sprintf(`{"type":"message","text":%q,"cid":"c%d"}`, text, i))
		if err != nil || code != http.StatusNoContent {
			t.Fatalf("POST: %d, %v", code, err)
		}
		m := awaitSSE(t, st, "message")
		if m.Text != text || m.User != "ann" || m.ID == "" {
			t.Fatalf("acknowledgement %+v, want %q from ann with an ID", m, text)
		}
		ids = append(ids, m.ID)
	}

	resumed, err := ssetest.Open(ctxT(t), nil, route+"?since="+url.QueryEscape(ids[0]), ann)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	h := awaitSSE(t, resumed, "history")
	var got []string
	for _, raw := range h.Messages {
		var m frame
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint(ids[1:]) || h.Reset {
		t.Fatalf("history after %s: %v (reset %v), want %v", ids[0], got, h.Reset, ids[1:])
	}

	_, bob := sseChat(t, n, "bob", "Chat Room")
	code, err := ssetest.Poster(st.Route, st.ID, bob).Send(ctxT(t), `{"type":"message","text":"as ann"}`)
	if err != nil || code != http.StatusForbidden {
		t.Fatalf("bob's POST to ann's stream: %d, %v; want 403", code, err)
	}
	if _, err := ssetest.Open(ctxT(t), nil, route, nil); ssetest.Status(err) != http.StatusForbidden {
		t.Fatalf("stream without a session: %v, want 403", err)
	}
}

// Error frames count toward the chat's budget over the fallback transport
// too: past it the stream ends with the close event 1008.
func TestChatOverSSETooManyErrors(t *testing.T) {
	n := newNode(t, nil, nil)
	route, ann := sseChat(t, n, "ann", "Chat Room")
	st, err := ssetest.Open(ctxT(t), nil, route, ann)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	awaitSSE(t, st, "history")
	bad := make([]string, maxErrors+1)
	for i := range bad {
		bad[i] = `{"type":"nonsense"}`
	}
	code, err := st.Send(ctxT(t), bad...)
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("POST: %d, %v", code, err)
	}
	errorsSeen := 0
	for {
		ev, err := st.Next(ctxT(t))
		if err != nil {
			t.Fatalf("after %d error frames: %v, want a close event", errorsSeen, err)
		}
		if ev.Name == "close" {
			if ev.Data != `{"code":1008,"reason":"too many errors"}` {
				t.Fatalf("close event %s, want 1008", ev.Data)
			}
			break
		}
		if strings.Contains(ev.Data, `"type":"error"`) {
			errorsSeen++
		}
	}
	if errorsSeen != maxErrors+1 {
		t.Fatalf("%d error frames before the close, want %d", errorsSeen, maxErrors+1)
	}
}
