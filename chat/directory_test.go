package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/consumer"
)

func (n *testNode) rooms(t *testing.T) []roomEntry {
	t.Helper()
	w := httptest.NewRecorder()
	n.app.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/rooms", nil))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /rooms = %d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	var out struct{ Rooms []roomEntry }
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return out.Rooms
}

// awaitRooms polls GET /rooms on n until it answers want, for up to 5 s.
func (n *testNode) awaitRooms(t *testing.T, want ...roomEntry) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := n.rooms(t)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /rooms = %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GET /rooms lists the configured rooms, then the others by online count,
// counted once per session across nodes; a leave counts at once, and the
// rooms of a node that is gone drop out once their entries expire.
func TestRoomDirectory(t *testing.T) {
	eachLayer(t, nil, func(t *testing.T, n1, n2 *testNode) {
		n1.join(t, "ann", "s-ann", "Chat Room", "").joinFrames("ann")
		n2.join(t, "ann", "s-ann", "Chat Room", "").joinFrames("ann") // another tab: one session
		n2.join(t, "bob", "s-bob", "Hot", "").joinFrames("bob")
		cid := n2.join(t, "cid", "s-cid", "Hot", "")
		cid.joinFrames("bob", "cid")
		n1.join(t, "dan", "s-dan", "Warm", "").joinFrames("dan")
		for _, n := range []*testNode{n1, n2} {
			n.awaitRooms(t, roomEntry{"Chat Room", 1}, roomEntry{"Business Room", 0}, roomEntry{"Gaming Room", 0},
				roomEntry{"Hot", 2}, roomEntry{"Warm", 1})
		}
		// A leave counts at once (after the node's one-second answer cache).
		cid.com.Disconnect(ctxT(t), consumer.StatusNormal)
		n1.awaitRooms(t, roomEntry{"Chat Room", 1}, roomEntry{"Business Room", 0}, roomEntry{"Gaming Room", 0},
			roomEntry{"Hot", 1}, roomEntry{"Warm", 1})
		// Node 2 goes away: Hot had members on it alone, so nobody refreshes
		// its entry, which expires (PresenceTTL, 1 s here). Chat Room still
		// has ann on node 1.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n2.app.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		n1.awaitRooms(t, roomEntry{"Chat Room", 1}, roomEntry{"Business Room", 0}, roomEntry{"Gaming Room", 0},
			roomEntry{"Warm", 1})
	})
}

// At most 50 rooms: the configured ones first, then the busiest.
func TestRoomDirectoryLimit(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.Rooms = []string{"b", "a"} })
	for i := range 60 {
		if err := n.app.dir.dir.SetCount(ctxT(t), roomsIndex, fmt.Sprintf("room %02d", i), i+1, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.app.dir.dir.SetCount(ctxT(t), roomsIndex, "a", 7, time.Minute); err != nil {
		t.Fatal(err)
	}
	got := n.rooms(t)
	if len(got) != maxDirectory {
		t.Fatalf("GET /rooms lists %d rooms, want %d", len(got), maxDirectory)
	}
	want := []roomEntry{{"b", 0}, {"a", 7}}
	for i := 59; len(want) < maxDirectory; i-- {
		want = append(want, roomEntry{fmt.Sprintf("room %02d", i), i + 1})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("GET /rooms = %v\nwant %v", got, want)
	}
}
