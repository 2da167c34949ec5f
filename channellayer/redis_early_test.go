package channellayer

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// earlyRig is the part of a Redis layer that early delivery touches: the
// local channels, one member of group "room" and its subscription, with no
// Redis behind it.
type earlyRig struct {
	r      *Redis
	s      *groupSub
	member string
}

func newEarlyRig(t *testing.T) *earlyRig {
	t.Helper()
	r := &Redis{local: newLocal(0, 0, processTag), prefix: "t", subs: make(map[string]*groupSub)}
	member, err := r.local.newChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.local.groupAdd("room", member); err != nil {
		t.Fatal(err)
	}
	ch := r.groupChan("room")
	s := &groupSub{group: "room", channel: ch, gen: subGens.Add(1)}
	r.subs[ch] = s
	return &earlyRig{r: r, s: s, member: member}
}

// delivered is what waits for the member, as "<id> <body>".
func (g *earlyRig) delivered(t *testing.T) []string {
	t.Helper()
	var out []string
	for {
		m, ok, err := g.r.local.tryReceive(g.member)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, m.ID+" "+string(m.Body))
	}
}

// batch is a record batch of bodies, answered by the script with prev
// and ids.
func (g *earlyRig) batch(prev string, ids []string, bodies ...string) (*recordBatch, redis.Cmder) {
	b := g.r.newRecordBatch("room", Message{Type: "chat", Body: []byte(bodies[0])}, nil)
	for _, body := range bodies[1:] {
		b.msgs = append(b.msgs, Message{Type: "chat", Body: []byte(body)})
	}
	cmd := redis.NewCmd(context.Background())
	answer := []any{prev}
	for _, id := range ids {
		answer = append(answer, id)
	}
	cmd.SetVal(answer)
	return b, cmd
}

func (g *earlyRig) recorded(t *testing.T, id string) bool {
	t.Helper()
	return g.r.deliverRecorded(g.s, Message{Type: "chat", ID: id, Body: []byte(`{"id":"` + id + `"}`)})
}

func equal(a, b []string) bool { return strings.Join(a, "|") == strings.Join(b, "|") }

// A batch whose previous entry is the last record delivered here goes to
// the members from the answer, once: its pub/sub copies are dropped as
// delivered, and the callers get the IDs read then.
func TestEarlyDelivers(t *testing.T) {
	g := newEarlyRig(t)
	if !g.recorded(t, "1-0") {
		t.Fatal("first record by pub/sub not delivered")
	}
	g.delivered(t)
	b, cmd := g.batch("1-0", []string{"2-0", "2-1"}, `{"a":1}`, `{}`)
	if !b.early(cmd) {
		t.Fatal("batch right after the last delivered record did not go early")
	}
	want := []string{`2-0 {"id":"2-0","a":1}`, `2-1 {"id":"2-1"}`}
	if got := g.delivered(t); !equal(got, want) {
		t.Fatalf("members got %q, want %q", got, want)
	}
	for _, id := range []string{"2-0", "2-1"} {
		if g.recorded(t, id) {
			t.Errorf("pub/sub copy of %s delivered again", id)
		}
	}
	if !g.recorded(t, "3-0") {
		t.Error("the next record by pub/sub was dropped")
	}
	if got := g.r.early.Load(); got != 2 {
		t.Errorf("early count %d, want 2", got)
	}
	ids, err := b.resultIDs(context.Background(), cmd, nil)
	if err != nil || !equal(ids, []string{"2-0", "2-1"}) {
		t.Errorf("callers' IDs %q, %v; want 2-0, 2-1", ids, err)
	}
}

// A record of another process between the last one delivered here and the
// batch, still unread on pub/sub, keeps the batch on pub/sub: the members
// get the history's order.
func TestEarlyWaitsForEarlierRecords(t *testing.T) {
	g := newEarlyRig(t)
	b, cmd := g.batch("", []string{"1-0"}, `{}`)
	if b.early(cmd) {
		t.Fatal("the group's first record went early: nothing delivered here to follow")
	}
	g.recorded(t, "1-0")
	b, cmd = g.batch("1-5", []string{"2-0"}, `{}`)
	if b.early(cmd) {
		t.Fatal("batch went early past an unread record of another process")
	}
	g.recorded(t, "1-5")
	g.recorded(t, "2-0")
	want := []string{`1-0 {"id":"1-0"}`, `1-5 {"id":"1-5"}`, `2-0 {"id":"2-0"}`}
	if got := g.delivered(t); !equal(got, want) {
		t.Fatalf("members got %q, want %q", got, want)
	}
}

// While a plain send of this process is not read back from pub/sub, no
// batch goes early: one sender's plain message and record keep their order.
func TestEarlyWaitsForPlainSends(t *testing.T) {
	g := newEarlyRig(t)
	g.recorded(t, "1-0")
	target := g.r.plainTarget(g.s.channel, "")
	if !strings.HasPrefix(target, g.r.local.prefix+plainMark) {
		t.Fatalf("plain target %q: want this process's prefix and the mark", target)
	}
	b, cmd := g.batch("1-0", []string{"2-0"}, `{}`)
	if b.early(cmd) {
		t.Fatal("batch went early past an unread plain send")
	}
	g.r.readBack(g.s, Message{Type: "typing", Body: []byte(`{}`)}, target)
	g.recorded(t, "2-0")
	b, cmd = g.batch("2-0", []string{"3-0"}, `{}`)
	if !b.early(cmd) {
		t.Fatal("batch did not go early once the plain send was read back")
	}
	want := []string{`1-0 {"id":"1-0"}`, ` {}`, `2-0 {"id":"2-0"}`, `3-0 {"id":"3-0"}`}
	if got := g.delivered(t); !equal(got, want) {
		t.Fatalf("members got %q, want %q", got, want)
	}
}

// A marked target still skips the excepted channel here, and only a mark
// of the present subscription reads a send back. Other processes, of this
// code or of one before marks, skip nobody.
func TestPlainTargetMarks(t *testing.T) {
	g := newEarlyRig(t)
	other, err := g.r.local.newChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.r.local.groupAdd("room", other); err != nil {
		t.Fatal(err)
	}
	target := g.r.plainTarget(g.s.channel, g.member)
	if target == g.member || !strings.HasPrefix(target, g.member+plainMark) {
		t.Fatalf("target %q: want %q and a mark", target, g.member)
	}
	stale := g.member + plainMark + "0" // a send to an earlier subscription of the group
	g.r.readBack(g.s, Message{Type: "a", Body: []byte(`{}`)}, stale)
	if g.s.read != 0 {
		t.Fatalf("a mark of another subscription was read back (read %d)", g.s.read)
	}
	g.r.readBack(g.s, Message{Type: "b", Body: []byte(`{}`)}, target)
	if g.s.read != 1 || g.s.sent != 1 {
		t.Fatalf("sent %d, read %d; want 1, 1", g.s.sent, g.s.read)
	}
	if got := g.delivered(t); len(got) != 0 {
		t.Errorf("the excepted member got %q", got)
	}
	for i := 0; i < 2; i++ {
		if _, ok, _ := g.r.local.tryReceive(other); !ok {
			t.Fatalf("the other member missed message %d", i)
		}
	}

	// Another process: the target names none of its channels.
	p := newEarlyRig(t)
	p.r.readBack(p.s, Message{Type: "c", Body: []byte(`{}`)}, target)
	p.r.local.deliverExcept("room", Message{Type: "d", Body: []byte(`{}`)}, target) // a reader without marks
	if got := p.delivered(t); len(got) != 2 {
		t.Errorf("another process's member got %q, want both messages", got)
	}
	if p.s.read != 0 {
		t.Errorf("another process read back a send it did not count (read %d)", p.s.read)
	}
}

// With replicas, records reach the members only once the replicas have
// them: nothing goes early, and plain sends are not marked.
func TestEarlyNotWithReplicas(t *testing.T) {
	g := newEarlyRig(t)
	g.r.replicas = 1
	g.recorded(t, "1-0")
	if target := g.r.plainTarget(g.s.channel, ""); target != "" {
		t.Errorf("plain target %q with replicas, want none", target)
	}
	b, cmd := g.batch("1-0", []string{"2-0"}, `{}`)
	if b.early(cmd) {
		t.Error("batch went early with replicas")
	}
}
