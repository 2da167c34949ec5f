package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/presence"
)

// listCountingLayer is the tests' memory layer counting the presence List
// calls made through it (a node's tracker reads the states of its diffs
// with ListAll, not List).
type listCountingLayer struct {
	*flakyLayer
	lists atomic.Int64
}

func (l *listCountingLayer) List(ctx context.Context, group string) ([]channellayer.Member, error) {
	l.lists.Add(1)
	return l.flakyLayer.List(ctx, group)
}

func newListCountingLayer(t *testing.T) *listCountingLayer {
	t.Helper()
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close(context.Background()) })
	return &listCountingLayer{flakyLayer: &flakyLayer{Memory: mem}}
}

// The users frames are built from the presence the node's tracker keeps,
// not from a List per room per flush or per join: the room's first join
// costs one (the tracker's first read of the room), and every other join
// (the joiner's own users frame) and every flush, on joins and leaves
// alike, none.
func TestUsersFramesWithoutListPerFlush(t *testing.T) {
	const joins = 8
	l := newListCountingLayer(t)
	n := newNode(t, l, func(c *Config) { c.Grace = 50 * time.Millisecond })
	names := []string{"u0"}
	a := n.join(t, "u0", "s0", "r", "")
	a.joinFrames(names...)
	var others []*client
	for i := 1; i < joins; i++ {
		names = append(names, fmt.Sprintf("u%d", i))
		c := n.join(t, names[i], fmt.Sprintf("s%d", i), "r", "")
		c.joinFrames(names...)
		a.awaitUsers(names...) // a flush of the room after each join
		others = append(others, c)
	}
	if got := l.lists.Load(); got > 1 {
		t.Fatalf("%d presence List calls for %d joins, want at most 1: the room's first read", got, joins)
	}

	// Lost connections (a grace period, then the sweep's diff): the
	// flushes that follow list nothing either.
	before := l.lists.Load()
	for i := len(others) - 1; i >= 0; i-- {
		others[i].com.Disconnect(ctxT(t), consumer.StatusGoingAway)
		names = names[:len(names)-1]
		a.awaitUsers(names...)
	}
	if got := l.lists.Load() - before; got != 0 {
		t.Fatalf("%d presence List calls for the users frames of %d leaves, want none", got, len(others))
	}
}

// A socket that joins and leaves again at once still brings the room's
// count back down, in its users frames and in the directory; and a room
// whose last socket on the node left (the tracker no longer has its state)
// is counted from a List, down to nobody.
func TestUsersCountBackDownAfterQuickLeave(t *testing.T) {
	l := newListCountingLayer(t)
	n := newNode(t, l, nil)
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	rooms := func(r ...roomEntry) []roomEntry {
		return append([]roomEntry{{"Chat Room", 0}, {"Business Room", 0}, {"Gaming Room", 0}}, r...)
	}
	n.awaitRooms(t, rooms(roomEntry{"r", 1})...)
	for i := range 3 {
		b := n.join(t, "bob", fmt.Sprintf("s-bob%d", i), "r", "")
		if err := b.com.Disconnect(ctxT(t), consumer.StatusNormal); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		a.await("notice", "bob has left the chat")
	}
	a.awaitUsers("ann")
	n.awaitRooms(t, rooms(roomEntry{"r", 1})...)
	a.during(100*time.Millisecond, func(f frame, b []byte) {
		if f.Type == "users" && userNames(f) != "ann" {
			t.Fatalf("users frame %s after bob left, want ann alone", b)
		}
	})

	before := l.lists.Load()
	if err := a.com.Disconnect(ctxT(t), consumer.StatusGoingAway); err != nil {
		t.Fatal(err)
	}
	n.awaitRooms(t, rooms()...)
	if l.lists.Load() == before {
		t.Fatal("the room left by its last local socket was counted without a List")
	}
}

// A users frame that is the same as the room's last, with no join or leave
// since, goes only to the sockets that joined since: a second tab of
// someone already listed (as when people come back on this node after
// another died, their old entry still listed) changes nothing the others
// see and costs them no frame, while a change anyone sees reaches everyone.
func TestUsersFrameOnlyWhenItChanges(t *testing.T) {
	n := newNode(t, newListCountingLayer(t), nil)
	a := n.join(t, "ann", "s-ann", "r", "")
	a.joinFrames("ann")
	b := n.join(t, "bob", "s-bob", "r", "")
	b.joinFrames("ann", "bob")
	a.awaitNoticeAndUsers("bob has joined the chat", "ann", "bob") // the users frame: the room's flush after the diff of the join

	tab := n.join(t, "bob", "s-bob", "r", "") // bob's second tab
	tab.joinFrames("ann", "bob")
	// The flush after the tab's diff: nothing anyone sees changed, and the
	// tab has this frame from its join: nobody gets it.
	a.quiet("users", "", 500*time.Millisecond)
	tab.quiet("users", "", 100*time.Millisecond)

	c := n.join(t, "cid", "s-cid", "r", "")
	c.joinFrames("ann", "bob", "cid")
	a.awaitUsers("ann", "bob", "cid")
	tab.awaitUsers("ann", "bob", "cid")
}

// A presence diff that only updates metas (a second tab; a person back on
// another node while a dead node's entry is still listed) asks for no
// users frame: the frame lists sessions by name, which such a diff cannot
// change. A join or a leave does ask for one, for every socket.
func TestMetaUpdateAsksForNoUsersFrame(t *testing.T) {
	h := newRoomHub(t)
	diff := func(d presence.Diff) channellayer.Message {
		msg, err := channellayer.NewMessage(presence.DiffType, d)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	meta := json.RawMessage(`{"n":"bob","t":1}`)
	state := func() (dirty, changed bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		r := h.rooms["r"]
		return r.dirty, r.changed
	}
	update := presence.Diff{Group: "r", Updates: map[string][]json.RawMessage{"s-bob": {meta, meta}}, Count: 2}
	if notices := h.diffed("r", diff(update)); len(notices) != 0 {
		t.Errorf("an update brought notices: %v", notices)
	}
	if dirty, _ := state(); dirty {
		t.Error("a diff that only updates metas asked for a users frame")
	}
	join := presence.Diff{Group: "r", Joins: map[string][]json.RawMessage{"s-bob": {meta}}, Count: 2}
	if notices := h.diffed("r", diff(join)); len(notices) != 1 || !strings.Contains(string(notices[0].body), "bob has joined") {
		t.Errorf("a join brought notices %v, want bob's", notices)
	}
	if dirty, changed := state(); !dirty || !changed {
		t.Errorf("after a join: dirty %v, changed %v; want a frame for every socket", dirty, changed)
	}
}

// newRoomHub returns a hub without a server (it is not to flush) and with
// room r, which has one socket.
func newRoomHub(t *testing.T) *hub {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(nil, time.Hour, slog.New(slog.DiscardHandler), m, nil)
	t.Cleanup(h.close)
	h.add("r", nil, 0)
	return h
}

// Every local socket takes a diff, some after the flush that followed the
// first: a diff asks for a frame once, or a late socket's take of a join
// already listed would send every socket the same frame again.
func TestDiffAsksForOneUsersFrame(t *testing.T) {
	h := newRoomHub(t)
	join := presence.Diff{Group: "r", Joins: map[string][]json.RawMessage{"s-bob": {json.RawMessage(`{"n":"bob","t":1}`)}}, Count: 2}
	take := func(msg channellayer.Message) (dirty, changed bool) {
		h.diffed("r", msg)
		h.mu.Lock()
		defer h.mu.Unlock()
		r := h.rooms["r"]
		dirty, changed = r.dirty, r.changed
		r.dirty, r.changed = false, false // as the flush does
		return dirty, changed
	}
	msg, err := channellayer.NewMessage(presence.DiffType, join)
	if err != nil {
		t.Fatal(err)
	}
	if dirty, changed := take(msg); !dirty || !changed {
		t.Fatalf("the first socket's take of a join: dirty %v, changed %v; want both", dirty, changed)
	}
	if dirty, changed := take(msg); dirty || changed {
		t.Errorf("a second socket's take of the same diff after the flush: dirty %v, changed %v; want neither", dirty, changed)
	}
	again, err := channellayer.NewMessage(presence.DiffType, join) // another diff, alike
	if err != nil {
		t.Fatal(err)
	}
	if dirty, changed := take(again); !dirty || !changed {
		t.Errorf("another diff with a join: dirty %v, changed %v; want both", dirty, changed)
	}
}

// A room remembers which diffs asked for a frame without keeping their
// bodies: after a join storm every room's last diffs would stay in memory.
func TestRoomKeepsNoDiffBody(t *testing.T) {
	h := newRoomHub(t)
	newDiff := func(name string) channellayer.Message {
		d := presence.Diff{Group: "r", Joins: map[string][]json.RawMessage{"s-" + name: {json.RawMessage(`{"n":"` + name + `","t":1}`)}}, Count: 2}
		msg, err := channellayer.NewMessage(presence.DiffType, d)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	first := newDiff("bob")
	h.diffed("r", first)
	gone := weak.Make(&first.Body[0])
	h.diffed("r", newDiff("cid")) // the hub's decoded-diff cache moves on
	first = channellayer.Message{}
	runtime.GC()
	if gone.Value() != nil {
		t.Fatal("the body of a diff that asked for a users frame is still reachable after the next diff: the room keeps it")
	}
	h.mu.Lock()
	asked := h.rooms["r"].changed
	h.mu.Unlock()
	if !asked {
		t.Fatal("the diffs did not ask for a users frame")
	}
}

// A socket's join frame is built from the presence a moment before the
// socket is added to its room; a flush in between sends the room a newer
// frame, which the socket, not added yet, does not get, and no change may
// come to bring it (people back after a node died, each missing from the
// list of another who came back at the same time). A socket added with
// another frame than the room's last gets the latest at the next tick.
func TestSocketAddedWithStaleFrameGetsTheLatest(t *testing.T) {
	n := newNode(t, nil, nil)
	a := n.join(t, "ann", "s-ann", "r", "")
	a.joinFrames("ann")
	b := n.join(t, "bob", "s-bob", "r", "")
	b.joinFrames("ann", "bob")
	a.awaitUsers("ann", "bob") // the room's last frame lists both
	b.awaitUsers("ann", "bob")
	h := n.app.hub
	h.mu.Lock()
	var ann *consumer.Conn
	for c := range h.rooms["r"].conns {
		if c.Scope().User.Session == "s-ann" {
			ann = c
		}
	}
	h.mu.Unlock()
	if ann == nil {
		t.Fatal("ann's socket is not in the room")
	}
	// As if ann's join frame (ann alone) had been built before bob's
	// join, and the flush that sent both names came before ann was added.
	stale, _ := json.Marshal(usersFrame{Type: "users", Room: "r", Count: 1, Users: []userEntry{{"ann"}}})
	h.add("r", ann, frameSum(stale))
	a.awaitUsers("ann", "bob")
	b.quiet("users", "", 200*time.Millisecond) // bob had it: nothing for him
}
