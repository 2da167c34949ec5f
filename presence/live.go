package presence

import (
	"cmp"
	"encoding/json"
	"hash/maphash"
	"iter"
	"slices"
	"strings"

	"github.com/chatterpro/chatterpro/channellayer"
)

// A tracker keeps, for each group with an entry on its process, the
// group's presence as it knows it (its live state): read in full from the
// layer when the group is new here, and after that kept up to date from the
// change signals, which carry the entries that were set and those that are
// gone. Only a lost signal, an overflow of the tracker's channel or the
// periodic repair makes it read the group in full again.

// idSeed hashes entry IDs: a live state keeps an 8-byte hash of each ID
// instead of the ID itself. The hashes never leave the process.
var idSeed = maphash.MakeSeed()

func idHash(id string) uint64 { return maphash.String(idSeed, id) }

// liveEntry is one entry of a group's live state.
type liveEntry struct {
	key   string
	id    uint64 // idHash of its ID
	since int64
	meta  json.RawMessage
}

// cmpLive orders entries by key, and a key's entries oldest first (then by
// ID hash, so that the order is total).
func cmpLive(a, b liveEntry) int {
	return cmp.Or(strings.Compare(a.key, b.key), cmp.Compare(a.since, b.since), cmp.Compare(a.id, b.id))
}

// live is a group's state: its entries in cmpLive's order, so that a key's
// entries sit side by side, oldest first; keys counts the distinct keys.
//
// One slice rather than a map from key to entries: a process mirrors every
// group it has a member in, so on a cluster of n processes whose groups
// are spread over all of them it holds about n entries for each of its own
// connections, and a map slot and a slice per key cost nearly twice the
// entry itself (TestLiveEntrySize). A change costs a binary search and a
// copy of the entries after it: microseconds for groups of thousands
// (BenchmarkLiveChange).
type live struct {
	es   []liveEntry
	keys int
}

// liveOf is the live state of a group whose layer entries are members.
// Entries that are not a tracker's are left out.
func liveOf(members []channellayer.Member) live {
	es := make([]liveEntry, 0, len(members))
	for _, mb := range members {
		if op, ok := setOp(mb.Key, mb.Info); ok {
			es = append(es, op.entry())
		}
	}
	slices.SortFunc(es, cmpLive)
	l := live{es: es}
	for range l.runs() {
		l.keys++
	}
	return l
}

// span returns where key's entries are: es[i:j], empty if it has none.
func (l *live) span(key string) (i, j int) {
	i, _ = slices.BinarySearchFunc(l.es, key, func(e liveEntry, k string) int { return strings.Compare(e.key, k) })
	for j = i; j < len(l.es) && l.es[j].key == key; j++ {
	}
	return i, j
}

// of returns key's entries, oldest first. They are the state's own: copy
// what is kept past the next change.
func (l *live) of(key string) []liveEntry {
	i, j := l.span(key)
	return l.es[i:j]
}

// runs yields each key with its entries, in key order.
func (l *live) runs() iter.Seq2[string, []liveEntry] {
	return func(yield func(string, []liveEntry) bool) {
		for i := 0; i < len(l.es); {
			j := i + 1
			for j < len(l.es) && l.es[j].key == l.es[i].key {
				j++
			}
			if !yield(l.es[i].key, l.es[i:j]) {
				return
			}
			i = j
		}
	}
}

// state turns a live state into the key → metas form of diffs and lists.
func (l *live) state() state {
	s := make(state, l.keys)
	for k, es := range l.runs() {
		s[k] = metasOf(es)
	}
	return s
}

// presences turns a live state into Presences, sorted by key, without the
// key → metas map in between.
func (l *live) presences() []Presence {
	out := make([]Presence, 0, l.keys)
	all := make([]json.RawMessage, len(l.es)) // one array for every key's metas
	for i, e := range l.es {
		all[i] = e.meta
	}
	from := 0
	for k, es := range l.runs() {
		to := from + len(es)
		out = append(out, Presence{Key: k, Metas: all[from:to:to]})
		from = to
	}
	return out
}

// metasOf returns the metas of entries, nil for none.
func metasOf(es []liveEntry) []json.RawMessage {
	if len(es) == 0 {
		return nil
	}
	out := make([]json.RawMessage, len(es))
	for i, e := range es {
		out[i] = e.meta
	}
	return out
}

// op is one change of a group's live state: an entry set (tracked, or its
// meta changed) or gone.
type op struct {
	id    uint64
	key   string
	gone  bool
	since int64
	meta  json.RawMessage
	grace bool // its connection is lost and may come back (info.Grace)
}

func (o op) entry() liveEntry { return liveEntry{key: o.key, id: o.id, since: o.since, meta: o.meta} }

// setOp decodes the info of the entry id; ok is false if it is not a
// tracker's.
func setOp(id string, b []byte) (op, bool) {
	var in info
	if json.Unmarshal(b, &in) != nil || in.Key == "" {
		return op{}, false
	}
	return infoOp(id, in), true
}

// infoOp is the op that sets the entry id with info in.
func infoOp(id string, in info) op {
	m := in.Meta
	if m == nil {
		m = json.RawMessage("null")
	}
	return op{id: idHash(id), key: in.Key, since: in.Since, meta: m, grace: in.Grace}
}

// touch is what a diff needs to know of a key changed since the last diff.
type touch struct {
	before []json.RawMessage // its metas at the last diff; nil: it was absent
	came   json.RawMessage   // set if it came while absent at the last diff
}

// touch remembers key's metas at the last diff before its first change
// since then.
func (g *group) touch(key string) {
	if _, ok := g.touched[key]; ok {
		return
	}
	if g.touched == nil {
		g.touched = make(map[string]touch)
	}
	g.touched[key] = touch{before: metasOf(g.live.of(key))}
}

// withPendingLeaves adds to list the keys gone from the live state since
// the last diff, with their metas then (see Tracker.Cached).
func (g *group) withPendingLeaves(list []Presence) []Presence {
	for k, tc := range g.touched {
		if tc.before == nil {
			continue
		}
		if len(g.live.of(k)) == 0 {
			list = append(list, Presence{Key: k, Metas: tc.before})
		}
	}
	return list
}

// apply makes ops, the content of one change signal, part of the live
// state; while a full read of the group is under way they are kept too,
// to be made part of what it returns.
func (g *group) apply(ops []op) {
	for _, o := range ops {
		g.applyOne(o)
	}
	if g.reads > 0 {
		g.pending = append(g.pending, ops...)
	}
}

func (g *group) applyOne(o op) {
	l := &g.live
	i, j := l.span(o.key)
	had := i < j
	k := slices.IndexFunc(l.es[i:j], func(e liveEntry) bool { return e.id == o.id })
	if o.gone && k < 0 {
		return
	}
	g.touch(o.key)
	if k >= 0 {
		l.es = slices.Delete(l.es, i+k, i+k+1)
		j--
	}
	if !o.gone {
		e := o.entry()
		p, _ := slices.BinarySearchFunc(l.es[i:j], e, cmpLive)
		if len(l.es) == cap(l.es) { // grow by an eighth, not append's half or double
			l.es = append(make([]liveEntry, 0, len(l.es)+len(l.es)/8+4), l.es...)
		}
		l.es = slices.Insert(l.es, i+p, e)
		j++
		if t := g.touched[o.key]; t.before == nil {
			t.came = o.meta
			g.touched[o.key] = t
		}
	}
	switch has := i < j; {
	case has && !had:
		l.keys++
	case had && !has:
		l.keys--
	}
	if c := cap(l.es); c > 64 && len(l.es) < c/4 { // most have left: give the room back
		l.es = slices.Clone(l.es)
	}
}

// install makes fresh, read from the layer, the group's live state; the
// changes signalled while it was read are applied to it again. The first
// state installed is the group's baseline: no diff tells what it holds.
func (g *group) install(fresh live) {
	if g.known {
		for k := range g.live.runs() {
			g.touch(k)
		}
		for k := range fresh.runs() {
			g.touch(k)
		}
	} else {
		g.touched = nil
	}
	g.live = fresh
	g.known = true
	for _, o := range g.pending {
		g.applyOne(o)
	}
}

// endRead ends one full read of the group; the changes kept for the reads
// go with the last.
func (g *group) endRead() {
	g.reads--
	if g.reads == 0 {
		g.pending = nil
	}
}

// takeDiff returns what changed since the last diff and starts the next.
func (g *group) takeDiff(name string) Diff {
	d := Diff{Group: name, Joins: map[string][]json.RawMessage{}, Leaves: map[string][]json.RawMessage{}, Count: g.live.keys}
	for k, t := range g.touched {
		now := metasOf(g.live.of(k))
		switch {
		case t.before == nil && now == nil:
			if t.came != nil { // came and went between two diffs
				d.Joins[k] = []json.RawMessage{t.came}
				d.Leaves[k] = []json.RawMessage{t.came}
			}
		case t.before == nil:
			d.Joins[k] = now
		case now == nil:
			d.Leaves[k] = t.before
		case !sameMetas(t.before, now):
			if d.Updates == nil {
				d.Updates = map[string][]json.RawMessage{}
			}
			d.Updates[k] = now
		}
	}
	g.touched = nil
	return d
}
