package layertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/chatterpro/chatterpro/channellayer"
)

// member is a channel and the layer that owns it.
type member struct {
	l    channellayer.Layer
	name string
}

func (e *env) member(l channellayer.Layer) member { return member{l, e.newChannel(l)} }

// recvSet receives len(want) messages on m and checks they are want, in
// any order, each once.
func (e *env) recvSet(m member, want ...channellayer.Message) {
	e.t.Helper()
	left := make(map[string]int)
	for _, w := range want {
		left[string(w.Body)]++
	}
	for range want {
		got := e.recv(m.l, m.name)
		if left[string(got.Body)] == 0 {
			e.t.Fatalf("channel %q received %s, which it should not (again)", m.name, got.Body)
		}
		left[string(got.Body)]--
	}
}

// checkGroupSend: a group send reaches every member on every process once;
// non-members get nothing.
func checkGroupSend(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	members := []member{e.member(a), e.member(a), e.member(b), e.member(b)}
	outsiders := []member{e.member(a), e.member(b)}
	for _, m := range members {
		e.join(m.l, g, m.name)
	}
	e.join(members[0].l, g, members[0].name) // joining twice is joining once
	other := e.name("other")
	for _, m := range outsiders {
		e.join(m.l, other, m.name)
	}

	m1, m2 := e.seqMsg(0, 1), e.seqMsg(1, 1)
	e.groupSend(a, g, m1) // sent right after GroupAdd returned: must arrive
	e.groupSend(b, g, m2)
	for _, m := range members {
		e.recvSet(m, m1, m2)
	}
	for _, m := range members {
		e.silent(m.l, m.name, "member after receiving each group message once")
	}
	for _, m := range outsiders {
		e.silent(m.l, m.name, "channel outside the group")
	}

	// A group nobody is in.
	if err := a.GroupSend(e.ctx(waitFor), e.name("empty"), m1); err != nil {
		e.t.Errorf("GroupSend to an empty group: %v", err)
	}
}

// checkGroupDiscard: a channel that left a group gets nothing more from it,
// and may join again.
func checkGroupDiscard(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	stay, leave, leaveA := e.member(a), e.member(b), e.member(a)
	for _, m := range []member{stay, leave, leaveA} {
		e.join(m.l, g, m.name)
	}
	for _, m := range []member{leave, leaveA} {
		if err := m.l.GroupDiscard(e.ctx(waitFor), g, m.name); err != nil {
			e.t.Fatalf("GroupDiscard: %v", err)
		}
	}
	m1 := e.seqMsg(0, 1)
	e.groupSend(a, g, m1)
	e.groupSend(b, g, e.seqMsg(1, 1))
	e.recvSet(stay, m1, e.seqMsg(1, 1))
	e.silent(leave.l, leave.name, "channel that left the group (other process)")
	e.silent(leaveA.l, leaveA.name, "channel that left the group")

	// Back in.
	e.join(leave.l, g, leave.name)
	m2 := e.seqMsg(0, 2)
	e.groupSend(a, g, m2)
	e.recvBody(leave.l, leave.name, m2)
	e.recvBody(stay.l, stay.name, m2)
	e.silent(leaveA.l, leaveA.name, "channel that left the group")
}

// checkDiscardChannel: a discarded channel leaves all its groups; the groups
// go on for the others, and a process whose last member left can join again.
func checkDiscardChannel(e *env) {
	a, b := e.a, e.peer()
	g1, g2 := e.name("g"), e.name("g")
	x, y, z := e.member(b), e.member(b), e.member(a)
	for _, m := range []member{x, y, z} {
		e.join(m.l, g1, m.name)
		e.join(m.l, g2, m.name)
	}
	if err := b.DiscardChannel(e.ctx(waitFor), x.name); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	m1, m2 := e.seqMsg(0, 1), e.seqMsg(0, 2)
	e.groupSend(a, g1, m1)
	e.groupSend(a, g2, m2)
	e.recvSet(y, m1, m2)
	e.recvSet(z, m1, m2)
	if _, err := b.Receive(e.ctx(waitFor), x.name); !errors.Is(err, channellayer.ErrNoChannel) {
		e.t.Errorf("Receive on a discarded channel: %v, want %v", err, channellayer.ErrNoChannel)
	}

	// The last member on b leaves; a new one joins later.
	if err := b.DiscardChannel(e.ctx(waitFor), y.name); err != nil {
		e.t.Fatalf("DiscardChannel: %v", err)
	}
	m3 := e.seqMsg(0, 3)
	e.groupSend(a, g1, m3)
	e.recvBody(z.l, z.name, m3)
	w := e.member(b)
	e.join(b, g1, w.name)
	m4 := e.seqMsg(0, 4)
	e.groupSend(a, g1, m4)
	// m3 was sent before w joined, but may still have been on its way to
	// w's process: w may get it or not, then m4.
	if got := e.recv(w.l, w.name); string(got.Body) != string(m4.Body) {
		if string(got.Body) != string(m3.Body) {
			e.t.Fatalf("new member received %s, want %s (or %s, sent just before it joined)", got.Body, m4.Body, m3.Body)
		}
		e.recvBody(w.l, w.name, m4)
	}
	e.recvBody(z.l, z.name, m4)
	e.silent(w.l, w.name, "new member after one message")
}

// checkOrder: one sender's group messages arrive in the order sent, at
// every member, from either process.
func checkOrder(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	members := []member{e.member(a), e.member(b)}
	for _, m := range members {
		e.join(m.l, g, m.name)
	}
	n := max(min(e.s.Capacity/2, 50), 1) // with room for a duplicate of each
	for sender, l := range []channellayer.Layer{a, b} {
		for i := range n {
			e.groupSend(l, g, e.seqMsg(sender, i))
		}
		for _, m := range members {
			for i := range n {
				got, err := decodeSeq(e.recv(m.l, m.name))
				if err != nil {
					e.t.Fatal(err)
				}
				if got != (seq{sender, i}) {
					e.t.Fatalf("member %q: message %d of sender %d is %+v, want %+v", m.name, i, sender, got, seq{sender, i})
				}
			}
			e.silent(m.l, m.name, "member after the whole sequence")
		}
	}
}

// checkOrderConcurrent: senders on both processes send to one group at once;
// every member gets each sender's messages once each, complete, in order.
func checkOrderConcurrent(e *env) {
	a, b := e.a, e.peer()
	g := e.name("g")
	const senders, perSender = 4, 100
	members := []member{e.member(a), e.member(a), e.member(b), e.member(b)}
	for _, m := range members {
		e.join(m.l, g, m.name)
	}

	// Flow control: at most Capacity messages in flight to each member, so
	// no channel overflows however slow its reader. Senders take a token
	// of every member, always in the same order; readers give one back.
	tokens := make([]chan struct{}, len(members))
	for i := range tokens {
		tokens[i] = make(chan struct{}, e.s.Capacity)
	}
	ctx, cancel := context.WithTimeout(e.t.Context(), 4*waitFor)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan string, len(members)+senders)
	for i, m := range members {
		wg.Go(func() {
			next := make([]int, senders)
			for got := 0; got < senders*perSender; got++ {
				msg, err := m.l.Receive(ctx, m.name)
				if err != nil {
					errs <- fmt.Sprintf("member %d (%q): Receive after %d messages: %v", i, m.name, got, err)
					cancel()
					return
				}
				select {
				case <-tokens[i]:
				default:
				}
				s, err := decodeSeq(msg)
				if err == nil && (s.Sender < 0 || s.Sender >= senders) {
					err = fmt.Errorf("unknown sender in %s", msg.Body)
				}
				if err == nil && s.N != next[s.Sender] {
					err = fmt.Errorf("from sender %d got message %d, want %d (duplicate, lost or reordered)", s.Sender, s.N, next[s.Sender])
				}
				if err != nil {
					errs <- fmt.Sprintf("member %d (%q): %v", i, m.name, err)
					cancel()
					return
				}
				next[s.Sender]++
			}
		})
	}
	for s := range senders {
		l := []channellayer.Layer{a, b}[s%2]
		wg.Go(func() {
			for n := range perSender {
				for _, tk := range tokens {
					select {
					case tk <- struct{}{}:
					case <-ctx.Done():
						errs <- fmt.Sprintf("sender %d: stopped at message %d: %v", s, n, ctx.Err())
						return
					}
				}
				if err := l.GroupSend(ctx, g, e.seqMsg(s, n)); err != nil {
					errs <- fmt.Sprintf("sender %d: GroupSend of message %d: %v", s, n, err)
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []string
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		e.t.Fatalf("concurrent group sends:\n%s", strings.Join(all, "\n"))
	}
	for _, m := range members {
		e.silent(m.l, m.name, "member after every sender's messages")
	}
}

// checkBody: the body arrives byte for byte, with its type, by Send and by
// group send, within and across processes.
func checkBody(e *env) {
	a, b := e.a, e.peer()
	raw := `{"type":"test.body" ,"text":"h\u00e9llo \"quoted\" \\ / 🎉 ünïcödé\n",` +
		`"nested":{"a":[1,2.50,-0,1e3,null,true,false,""],"b":{}},  "padding":"` +
		strings.Repeat("0123456789abcdef", 2048) + `"  }`
	big, err := channellayer.ParseMessage([]byte(raw))
	if err != nil {
		e.t.Fatalf("ParseMessage: %v", err)
	}
	empty := e.msg("test.empty", nil)
	g := e.name("g")
	ma, mb := e.member(a), e.member(b)
	e.join(a, g, ma.name)
	e.join(b, g, mb.name)

	check := func(how string, m member, want channellayer.Message) {
		e.t.Helper()
		got := e.recv(m.l, m.name)
		if got.Type != want.Type || got.ID != "" || string(got.Body) != string(want.Body) {
			e.t.Errorf("%s: received type %q, ID %q, body of %d bytes; want type %q, no ID, the %d bytes sent", how, got.Type, got.ID, len(got.Body), want.Type, len(want.Body))
		}
	}
	for _, want := range []channellayer.Message{big, empty} {
		e.send(b, ma.name, want)
		check("Send from another process", ma, want)
		e.send(a, ma.name, want)
		check("Send", ma, want)
		e.groupSend(b, g, want)
		check("GroupSend from another process", ma, want)
		check("GroupSend", mb, want)
	}
}
