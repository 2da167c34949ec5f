package main_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// clusterRoom is a room and the master of the cluster that owns its group.
type clusterRoom struct {
	name  string
	tag   string // the hash tag: the room name with '%', '{' and '}' percent-encoded
	slot  int
	owner int // index of the owning master in the redistest cluster
}

func (r clusterRoom) key(kind string) string { return "chatterpro:{" + r.tag + "}:" + kind }

// clusterTag encodes a room name the way the design names a group's keys:
// '%', '{' and '}' percent-encoded, so the tag is the whole name.
func clusterTag(room string) string {
	return strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D").Replace(room)
}

// clusterRooms picks one room per master: the first candidates whose
// history key hashes to a slot each master owns. The first candidate has
// braces and a percent sign, so the escaped hash tag is exercised too.
func clusterRooms(t *testing.T, cl *redistest.Cluster) []clusterRoom {
	t.Helper()
	candidates := []string{"Ops {Shard} 100%"}
	for i := 1; i <= 60; i++ {
		candidates = append(candidates, fmt.Sprintf("Shard Room %d", i))
	}
	byOwner := make(map[int]clusterRoom)
	for _, name := range candidates {
		r := clusterRoom{name: name, tag: clusterTag(name)}
		var err error
		if r.slot, err = cl.KeySlot(r.key("h")); err != nil {
			t.Fatal(err)
		}
		// Every key of the group must share the slot.
		for _, kind := range []string{"p", "e", "g"} {
			if s, err := cl.KeySlot(r.key(kind)); err != nil || s != r.slot {
				t.Fatalf("%s is in slot %d (%v), %s in %d", r.key(kind), s, err, r.key("h"), r.slot)
			}
		}
		if r.owner, err = cl.Owner(r.slot); err != nil {
			t.Fatal(err)
		}
		if _, ok := byOwner[r.owner]; !ok {
			byOwner[r.owner] = r
		}
		if len(byOwner) == cl.Len() {
			break
		}
	}
	if len(byOwner) != cl.Len() {
		t.Fatalf("no candidate room on %d of the %d masters", cl.Len()-len(byOwner), cl.Len())
	}
	rooms := make([]clusterRoom, 0, len(byOwner))
	for i := range cl.Len() {
		rooms = append(rooms, byOwner[i])
	}
	return rooms
}

// clusterInt runs a command with an integer reply on master i.
func clusterInt(t *testing.T, cl *redistest.Cluster, i int, args ...string) int {
	t.Helper()
	out, err := cl.Do(i, args...)
	if err != nil {
		t.Fatalf("master %d: %s: %v", i, strings.Join(args, " "), err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("master %d: %s: not an integer: %q", i, strings.Join(args, " "), out)
	}
	return n
}

// clusterStats are the calls of the commands a chat message costs on one
// master, from INFO commandstats. Commands a script runs count too.
type clusterStats struct{ spublish, scripts, xadd int }

func clusterCommandStats(t *testing.T, cl *redistest.Cluster) []clusterStats {
	t.Helper()
	out := make([]clusterStats, cl.Len())
	for i := range cl.Len() {
		info, err := cl.Do(i, "INFO", "commandstats")
		if err != nil {
			t.Fatalf("master %d: INFO commandstats: %v", i, err)
		}
		for line := range strings.Lines(info) {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
			n, _ := strconv.Atoi(calls)
			switch name {
			case "cmdstat_spublish":
				out[i].spublish = n
			case "cmdstat_xadd":
				out[i].xadd = n
			case "cmdstat_evalsha", "cmdstat_eval":
				out[i].scripts += n
			}
		}
	}
	return out
}

// The chat on a Redis Cluster of three masters: two nodes given every
// master's address, three rooms whose groups live on three different
// shards; in each, users on both nodes chat, leave and resume across nodes,
// and a room's chat traffic reaches its own shard only.
func TestClusterThreeShards(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := redistest.StartCluster(t, 3)
	layer := "redis-cluster://" + strings.Join(cl.Addrs(), ",")
	a := testnode.Start(t, testnode.Options{Layer: layer})
	b := testnode.Start(t, testnode.Options{Layer: layer})
	rooms := clusterRooms(t, cl)
	for _, r := range rooms {
		t.Logf("room %q: tag {%s}, slot %d, master %d (%s)", r.name, r.tag, r.slot, r.owner, cl.Addrs()[r.owner])
	}
	t.Logf("cluster and nodes up after %v", time.Since(start))

	t.Run("rooms", func(t *testing.T) {
		for _, r := range rooms {
			t.Run(r.name, func(t *testing.T) {
				t.Parallel()
				// Each its own deadline, from when it runs: a parallel
				// subtest may wait for a slot behind the package's other
				// parallel tests, and a deadline set before that wait
				// once ran out 0.3 s into the room's chat.
				clusterRoomChat(timeout(t, 25*time.Second), t, cl, a, b, r)
			})
		}
	})
	if t.Failed() {
		return
	}
	t.Run("one shard per group", func(t *testing.T) {
		clusterBursts(timeout(t, 25*time.Second), t, cl, a, b, rooms)
	})
	t.Logf("took %v", time.Since(start))
}

// clusterRoomChat: Alice on node A and Bob on node B join, see each other
// and chat; Bob drops and resumes on node A with since; Carol joins on node
// B and leaves with 1000. The room's history is on its owner.
func clusterRoomChat(ctx context.Context, t *testing.T, cl *redistest.Cluster, a, b *testnode.Node, r clusterRoom) {
	room := r.name
	alice := connect(ctx, t, a.URL(), "Alice", room)
	bob := connect(ctx, t, b.URL(), "Bob", room)

	if _, err := alice.Await(ctx, "notice", isNotice("Bob has joined the chat")); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	if f, err := alice.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("Bob") }); err != nil {
		t.Fatalf("Alice: %v", err)
	} else if f.Room != room || f.Count != 2 || !slices.Equal(f.Names(), []string{"Alice", "Bob"}) {
		t.Errorf("Alice's users frame %v; want Alice and Bob in %q", f, room)
	}
	for _, f := range bob.Received() {
		if f.Type == "users" && (f.Room != room || !slices.Equal(f.Names(), []string{"Alice", "Bob"})) {
			t.Errorf("Bob's users frame %v; want Alice and Bob in %q", f, room)
		}
	}

	fromA, fromB := "hello from A in "+room, "hello from B in "+room
	if err := alice.Send(ctx, fromA); err != nil {
		t.Fatal(err)
	}
	if err := bob.Send(ctx, fromB); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range []*testnode.Client{alice, bob} {
		got := messagesUntil(ctx, t, c, 300*time.Millisecond, hasAll(fromA, fromB))
		if len(got) != 2 {
			t.Errorf("%s got %d messages %q; want each of the two once", c.Nickname, len(got), texts(got))
		}
		var mine []string
		for _, m := range got {
			mine = append(mine, m.ID)
			if want := map[string]string{fromA: "Alice", fromB: "Bob"}[m.Text]; m.User != want || m.ID == "" {
				t.Errorf("%s: message %v; want one from %q with an id", c.Nickname, m, want)
			}
		}
		slices.Sort(mine)
		if ids == nil {
			ids = mine
		} else if !slices.Equal(ids, mine) {
			t.Errorf("Bob's message IDs %v differ from Alice's %v", mine, ids)
		}
	}
	if t.Failed() {
		return
	}

	// The group lives on its owner: its history stream is there.
	if n := clusterInt(t, cl, r.owner, "EXISTS", r.key("h")); n != 1 {
		t.Errorf("EXISTS %s on master %d = %d; want 1", r.key("h"), r.owner, n)
	}
	if n := clusterInt(t, cl, r.owner, "XLEN", r.key("h")); n != 2 {
		t.Errorf("XLEN %s on master %d = %d; want 2", r.key("h"), r.owner, n)
	}
	// Two entries, besides the format version's field "" (see the
	// channel layer's formats).
	if n := clusterInt(t, cl, r.owner, "HLEN", r.key("p")); n != 3 {
		t.Errorf("HLEN %s on master %d = %d; want 2 presence entries and the format's field", r.key("p"), r.owner, n)
	}
	if n := clusterInt(t, cl, r.owner, "HEXISTS", r.key("p"), ""); n != 1 {
		t.Errorf("HEXISTS %s \"\" on master %d = %d; want the format's field", r.key("p"), r.owner, n)
	}
	// The other masters redirect to it.
	for m := range cl.Len() {
		if m == r.owner {
			continue
		}
		want := fmt.Sprintf("MOVED %d %s", r.slot, cl.Addrs()[r.owner])
		if out, _ := cl.Do(m, "EXISTS", r.key("h")); !strings.Contains(out, want) {
			t.Errorf("EXISTS %s on master %d: %q; want %q", r.key("h"), m, strings.TrimSpace(out), want)
		}
	}

	// Bob's connection to node B drops (1001, not a leave); Alice sends
	// meanwhile; Bob resumes on node A with since=<last id>.
	var lastID string
	for _, f := range bob.Received() {
		if f.Type == "message" {
			lastID = f.ID
		}
	}
	bob.Close(websocket.StatusGoingAway)
	missed := []string{"missed 1 in " + room, "missed 2 in " + room, "missed 3 in " + room}
	for _, m := range missed {
		if err := alice.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	messagesUntil(ctx, t, alice, 0, hasAll(missed...))
	if err := bob.DialTo(ctx, a.URL(), lastID); err != nil {
		t.Fatal(err)
	}
	h, err := bob.Next(ctx)
	if err != nil || h.Type != "history" {
		t.Fatalf("Bob's first frame after resuming: %v, %v; want history", h, err)
	}
	if h.Reset || !slices.Equal(texts(h.Messages), missed) {
		t.Errorf("Bob's resumed history %q (reset %v); want exactly %q", texts(h.Messages), h.Reset, missed)
	}
	after := "after resume in " + room
	if err := alice.Send(ctx, after); err != nil {
		t.Fatal(err)
	}
	if got := messagesUntil(ctx, t, bob, 300*time.Millisecond, hasAll(after)); !slices.Equal(texts(got), []string{after}) {
		t.Errorf("Bob's live messages after resuming %q; want only %q", texts(got), after)
	}
	messagesUntil(ctx, t, alice, 0, hasAll(after))

	// Carol joins on node B and leaves with 1000: Alice on node A hears
	// at once, and Bob is still listed (his drop was no departure).
	carol := connect(ctx, t, b.URL(), "Carol", room)
	if _, err := alice.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("Carol") }); err != nil {
		t.Fatalf("Alice: %v", err)
	}
	leaveQuickly(ctx, t, alice, carol, "Alice", "Bob")

	if n := countNotices(alice, "Bob has joined the chat"); n != 1 {
		t.Errorf("Alice got %d join notices for Bob; want 1 (the resume is no join)", n)
	}
	for _, c := range []*testnode.Client{alice, bob} {
		for _, f := range c.Received() {
			if f.Type == "notice" && strings.HasPrefix(f.Text, "Bob has left") {
				t.Errorf("%s got %q for a resume within the grace period", c.Nickname, f.Text)
			}
		}
	}
	if n := countNotices(bob, "Bob has joined the chat"); n > 1 {
		t.Errorf("Bob got his own join notice %d times", n)
	}
	if n := clusterInt(t, cl, r.owner, "XLEN", r.key("h")); n != 2+len(missed)+1 {
		t.Errorf("XLEN %s on master %d = %d; want %d", r.key("h"), r.owner, n, 2+len(missed)+1)
	}
}

// clusterBursts connects a user on each node in every room, then sends a
// burst of 20 messages in one room at a time and compares the commandstats
// deltas of the three masters: the owner's XADD grows by the 20 messages
// and its SPUBLISH by one per script call that recorded them (1 to 20, as
// the burst's records shared calls), the other masters' not at all, and
// their scripts only by the nodes' background work for their own rooms
// (the once-a-second presence sweep of each room with local members, and
// the presence refresh every TTL/3).
func clusterBursts(ctx context.Context, t *testing.T, cl *redistest.Cluster, a, b *testnode.Node, rooms []clusterRoom) {
	const burst = 20
	senders := make([]*testnode.Client, len(rooms))
	readers := make([]*testnode.Client, len(rooms))
	for i, r := range rooms {
		senders[i] = connect(ctx, t, a.URL(), "Xena", r.name)
		readers[i] = connect(ctx, t, b.URL(), "Yuri", r.name)
	}
	// The joins' notices went out before the senders heard them.
	for _, c := range senders {
		if _, err := c.Await(ctx, "notice", isNotice("Yuri has joined the chat")); err != nil {
			t.Fatalf("%s in %q: %v", c.Nickname, c.Room, err)
		}
	}
	for i, r := range rooms {
		var msgs []string
		for k := range burst {
			msgs = append(msgs, fmt.Sprintf("burst %d in %s", k, r.name))
		}
		began := time.Now()
		before := clusterCommandStats(t, cl)
		for _, m := range msgs {
			if err := senders[i].Send(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*testnode.Client{senders[i], readers[i]} {
			if got := messagesUntil(ctx, t, c, 0, hasAll(msgs...)); len(got) != burst {
				t.Errorf("%s in %q got %d messages; want %d", c.Nickname, r.name, len(got), burst)
			}
		}
		now := clusterCommandStats(t, cl)
		took := time.Since(began) // the window between the two snapshots' starts and ends
		// Background script calls per master: a sweep by each of the two
		// nodes per started second of its one room, plus a refresh of
		// each of its members.
		background := 2*(int(took/time.Second)+2) + 4
		for m := range cl.Len() {
			dp, ds, dx := now[m].spublish-before[m].spublish, now[m].scripts-before[m].scripts, now[m].xadd-before[m].xadd
			t.Logf("burst in %q (%v): master %d: SPUBLISH +%d, EVAL/EVALSHA +%d, XADD +%d", r.name, took.Round(time.Millisecond), m, dp, ds, dx)
			if m == r.owner {
				if dx != burst {
					t.Errorf("burst of %d in %q: its owner, master %d, recorded %d messages; want %d", burst, r.name, m, dx, burst)
				}
				if dp < 1 || dp > burst {
					t.Errorf("burst of %d in %q: its owner, master %d, published %d times; want 1 to %d", burst, r.name, m, dp, burst)
				}
				if ds < dp || ds > dp+background {
					t.Errorf("burst of %d in %q: its owner, master %d, ran %d scripts; want its %d record calls plus at most %d of background", burst, r.name, m, ds, dp, background)
				}
				continue
			}
			if dp != 0 || dx != 0 {
				t.Errorf("burst in %q: master %d, not its owner, published %d times and recorded %d messages; want 0", r.name, m, dp, dx)
			}
			if ds > background {
				t.Errorf("burst in %q: master %d, not its owner, ran %d scripts; want at most %d of background", r.name, m, ds, background)
			}
		}
		for _, c := range []*testnode.Client{senders[i], readers[i]} {
			for _, f := range c.Received() {
				if f.Type == "error" {
					t.Errorf("%s in %q got %v", c.Nickname, r.name, f)
				}
			}
		}
	}
}
