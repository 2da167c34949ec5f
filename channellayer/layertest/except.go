package layertest

import "github.com/chatterpro/chatterpro/channellayer"

// checkGroupSendExcept: a group send except one channel reaches every other
// member on every process once, and never the excepted one, wherever the
// sender and the excepted channel live.
func checkGroupSendExcept(e *env) {
	a, b := e.a, e.peer()
	xa, okA := a.(channellayer.ExceptSender)
	xb, okB := b.(channellayer.ExceptSender)
	if !okA || !okB {
		e.t.Skip("the backend does not implement channellayer.ExceptSender")
	}
	g := e.name("except")
	members := []member{e.member(a), e.member(a), e.member(b), e.member(b)}
	for _, m := range members {
		e.join(m.l, g, m.name)
	}
	sends := []struct {
		from   channellayer.ExceptSender
		except member
	}{
		{xa, members[0]}, // the sender's own process
		{xb, members[0]}, // another process
		{xa, members[3]},
	}
	for i, s := range sends {
		m := e.seqMsg(9, i)
		if err := s.from.GroupSendExcept(e.ctx(waitFor), g, m, s.except.name); err != nil {
			e.t.Fatalf("GroupSendExcept: %v", err)
		}
		for _, mem := range members {
			if mem == s.except {
				continue
			}
			e.recvBody(mem.l, mem.name, m)
		}
		e.silent(s.except.l, s.except.name, "the excepted channel")
	}
	// An excepted channel that is not in the group changes nothing.
	outsider := e.member(a)
	m := e.seqMsg(9, 99)
	if err := xb.GroupSendExcept(e.ctx(waitFor), g, m, outsider.name); err != nil {
		e.t.Fatalf("GroupSendExcept: %v", err)
	}
	for _, mem := range members {
		e.recvBody(mem.l, mem.name, m)
	}
}
