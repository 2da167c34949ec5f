package main

// tracker counts, for one receiver, which (sender, seq) pairs arrived, so
// that losses and duplicates can be told apart. Senders number their
// messages 0, 1, 2, ...; a bitset per sender records what was seen. It is
// owned by the receiver's goroutine.
type tracker struct {
	seen  map[uint32][]uint64
	recv  uint64 // deliveries, duplicates included
	dups  uint64
	stale uint64 // from a sender outside the current measurement
}

func newTracker() *tracker { return &tracker{seen: make(map[uint32][]uint64)} }

// record notes one delivery and reports whether it was a duplicate.
func (t *tracker) record(sender, seq uint32) bool {
	t.recv++
	b := t.seen[sender]
	w := int(seq / 64)
	if w >= len(b) {
		nb := make([]uint64, max(w+1, 2*len(b)))
		copy(nb, b)
		b = nb
		t.seen[sender] = b
	}
	bit := uint64(1) << (seq % 64)
	if b[w]&bit != 0 {
		t.dups++
		return true
	}
	b[w] |= bit
	return false
}

// missing returns how many of seqs 0..sent-1 from sender never arrived.
func (t *tracker) missing(sender uint32, sent uint32) uint64 {
	b := t.seen[sender]
	var got uint64
	for seq := uint32(0); seq < sent; seq++ {
		w := int(seq / 64)
		if w < len(b) && b[w]&(1<<(seq%64)) != 0 {
			got++
		}
	}
	return uint64(sent) - got
}

// unique returns how many distinct messages arrived from the given senders
// with seq below their sent counts.
func (t *tracker) unique(sent map[uint32]uint32) uint64 {
	var n uint64
	for s, c := range sent {
		n += uint64(c) - t.missing(s, c)
	}
	return n
}
