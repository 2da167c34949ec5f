package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/testkit"
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

// batchDirectory is a Directory that records its SetCounts calls and
// fails them while failing is set; SetCount must not be called.
type batchDirectory struct {
	channellayer.Directory
	mu      sync.Mutex
	failing bool
	batches [][]channellayer.Count
	singles int
}

func (b *batchDirectory) SetCount(ctx context.Context, index, name string, n int, ttl time.Duration) error {
	b.mu.Lock()
	b.singles++
	b.mu.Unlock()
	return b.Directory.SetCount(ctx, index, name, n, ttl)
}

func (b *batchDirectory) SetCounts(ctx context.Context, index string, counts []channellayer.Count, ttl time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batches = append(b.batches, slices.Clone(counts))
	if b.failing {
		return errors.New("injected failure")
	}
	return b.Directory.(channellayer.DirectoryBatcher).SetCounts(ctx, index, counts, ttl)
}

// lastBatch waits for a SetCounts call after the first n and returns it,
// sorted by name.
func (b *batchDirectory) lastBatch(t *testing.T, n int) []channellayer.Count {
	t.Helper()
	var got []channellayer.Count
	testkit.Eventually(t, 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.batches) <= n {
			return false
		}
		got = slices.Clone(b.batches[len(b.batches)-1])
		return true
	}, "a refresh")
	slices.SortFunc(got, func(x, y channellayer.Count) int { return strings.Compare(x.Name, y.Name) })
	return got
}

// The refresh sets the counts of every room with members here in one
// call, not one call per room; a refresh that failed is tried again by the
// next one, and an update to the same count after a failure is not
// skipped.
func TestDirectoryRefreshIsOneCall(t *testing.T) {
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close(context.Background())
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	bd := &batchDirectory{Directory: mem}
	d := newDirectory(bd, nil, 150*time.Millisecond, slog.New(slog.DiscardHandler), m)
	local := []string{"a", "b", "c"}
	for i, room := range local {
		d.update(room, i+1)
	}
	d.update("elsewhere", 9) // no members here: not refreshed
	d.start(func() []string { return local })
	defer d.close()
	want := []channellayer.Count{{Name: "a", N: 1}, {Name: "b", N: 2}, {Name: "c", N: 3}}
	if got := bd.lastBatch(t, 0); !slices.Equal(got, want) {
		t.Fatalf("refresh set %v, want %v in one call", got, want)
	}
	bd.mu.Lock()
	singles := bd.singles
	bd.failing = true
	n := len(bd.batches)
	bd.mu.Unlock()
	if singles != 4 {
		t.Errorf("%d SetCount calls, want the 4 updates only", singles)
	}
	bd.lastBatch(t, n) // fails
	bd.mu.Lock()
	bd.failing = false
	n = len(bd.batches)
	bd.mu.Unlock()
	if got := bd.lastBatch(t, n); !slices.Equal(got, want) {
		t.Errorf("the refresh after a failed one set %v, want %v", got, want)
	}
	// A failed set is not skipped by the next update to the same count.
	bd.mu.Lock()
	bd.failing = true
	n = len(bd.batches)
	bd.mu.Unlock()
	bd.lastBatch(t, n)
	d.mu.Lock()
	failed := d.counts["a"].failed
	d.mu.Unlock()
	if !failed {
		t.Fatal("a failed refresh did not mark its rooms")
	}
	bd.mu.Lock()
	bd.failing = false
	before := bd.singles
	bd.mu.Unlock()
	d.update("a", 1)
	bd.mu.Lock()
	after := bd.singles
	bd.mu.Unlock()
	if after != before+1 {
		t.Errorf("an update to the count whose set failed made %d calls, want 1", after-before)
	}
}
