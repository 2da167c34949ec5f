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

// batchAfter waits for a SetCounts call after the first n whose entries,
// sorted by name, are want.
func (b *batchDirectory) batchAfter(t *testing.T, n int, want ...channellayer.Count) {
	t.Helper()
	var seen [][]channellayer.Count
	testkit.Eventually(t, 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		seen = b.batches[min(n, len(b.batches)):]
		for _, got := range seen {
			got = slices.Clone(got)
			slices.SortFunc(got, func(x, y channellayer.Count) int { return strings.Compare(x.Name, y.Name) })
			if slices.Equal(got, want) {
				return true
			}
		}
		return false
	}, fmt.Sprintf("a SetCounts of %v (after %d calls; seen %v)", want, n, seen))
}

func (b *batchDirectory) calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.batches)
}

func (b *batchDirectory) fail(failing bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failing = failing
}

// Counts that changed are set together, in one call, soon after; the
// refresh sets the counts of every room with members here in one call,
// not one call per room, and a refresh that failed is tried again by the
// next one.
func TestDirectorySetsInOneCall(t *testing.T) {
	bd, d := newBatchDirectory(t, 300*time.Millisecond)
	local := []string{"a", "b", "c"}
	c := func(name string, n int) channellayer.Count { return channellayer.Count{Name: name, N: n} }
	for i, room := range local {
		d.update(room, i+1)
	}
	d.update("elsewhere", 9) // no members here: set, but not refreshed
	d.start(func() []string { return local })
	defer d.close()
	bd.batchAfter(t, 0, c("a", 1), c("b", 2), c("c", 3), c("elsewhere", 9))
	bd.batchAfter(t, 0, c("a", 1), c("b", 2), c("c", 3))

	bd.fail(true)
	bd.batchAfter(t, bd.calls(), c("a", 1), c("b", 2), c("c", 3)) // fails
	bd.fail(false)
	bd.batchAfter(t, bd.calls(), c("a", 1), c("b", 2), c("c", 3))
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if bd.singles != 0 {
		t.Errorf("%d SetCount calls, want none (every set in SetCounts)", bd.singles)
	}
}

// An update to the count this node last set makes no call, unless setting
// it failed.
func TestDirectoryUpdateAfterFailure(t *testing.T) {
	bd, d := newBatchDirectory(t, time.Hour) // no refresh during the test
	c := func(name string, n int) channellayer.Count { return channellayer.Count{Name: name, N: n} }
	d.start(func() []string { return []string{"a"} })
	defer d.close()
	bd.fail(true)
	d.update("a", 1)
	bd.batchAfter(t, 0, c("a", 1)) // fails
	testkit.Eventually(t, 5*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.counts["a"].failed
	}, "the failed set noted")
	bd.fail(false)
	n := bd.calls()
	d.update("a", 1)
	bd.batchAfter(t, n, c("a", 1))
	testkit.Eventually(t, 5*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return !d.counts["a"].failed
	}, "the set noted")
	n = bd.calls()
	d.update("a", 1) // what was last set: no call
	d.update("b", 2)
	bd.batchAfter(t, n, c("b", 2))
	if got := bd.calls(); got != n+1 {
		t.Errorf("%d calls after the set of a, want 1 (b's)", got-n)
	}
}

func newBatchDirectory(t *testing.T, ttl time.Duration) (*batchDirectory, *directory) {
	t.Helper()
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close(context.Background()) })
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	bd := &batchDirectory{Directory: mem}
	return bd, newDirectory(bd, nil, ttl, slog.New(slog.DiscardHandler), m)
}
