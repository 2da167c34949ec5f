package presence

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
)

// TestLiveEntrySize guards what a process pays for each entry of the
// groups it mirrors, beyond the key and meta themselves: on a cluster
// whose groups are spread over n processes that is n entries for each
// connection of its own. Groups of 100 built from change signals, as they
// are: one slice per group of 56-byte entries, grown by an eighth, costs
// about 60 bytes an entry; the map from key to a slice of entries it
// replaced cost 103 (a map slot and a one-entry slice per key).
func TestLiveEntrySize(t *testing.T) {
	const groups, size, limit = 400, 100, 72
	ops := make([][]op, groups)
	for g := range ops {
		for e := range size {
			id := fmt.Sprintf("g%d-e%d", g, e)
			ops[g] = append(ops[g], op{id: idHash(id), key: "key-" + id, since: rand.Int64(), meta: json.RawMessage(`{"name":"x"}`)})
		}
		rand.Shuffle(len(ops[g]), func(i, j int) { ops[g][i], ops[g][j] = ops[g][j], ops[g][i] })
	}
	gs := make([]group, groups)
	var before, after runtime.MemStats
	settle := func(m *runtime.MemStats) { // twice: pools are dropped at the second collection
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(m)
	}
	settle(&before)
	for i := range gs {
		for _, o := range ops[i] {
			gs[i].applyOne(o)
		}
		gs[i].touched = nil // what the next diff drops
	}
	settle(&after)
	per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (groups * size)
	t.Logf("%.1f bytes an entry", per)
	if per > limit {
		t.Errorf("a live entry costs %.1f bytes beyond its key and meta, want at most %d: every process pays it for every member of the groups it mirrors", per, limit)
	}
	for i := range gs {
		if gs[i].live.keys != size || len(gs[i].live.es) != size {
			t.Fatalf("group %d: %d keys, %d entries, want %d of each", i, gs[i].live.keys, len(gs[i].live.es), size)
		}
	}
	runtime.KeepAlive(ops)
}

// TestLiveOrder: a key's entries stay together, oldest first, through
// sets, moves and leaves, and the key count follows.
func TestLiveOrder(t *testing.T) {
	var g group
	set := func(id, key string, since int64) {
		g.applyOne(op{id: idHash(id), key: key, since: since, meta: json.RawMessage(fmt.Sprintf("%q", id))})
	}
	gone := func(id, key string) { g.applyOne(op{id: idHash(id), key: key, gone: true}) }
	set("b2", "bob", 20)
	set("a1", "ada", 30)
	set("b1", "bob", 10)
	set("c1", "cid", 5)
	set("b2", "bob", 5) // the same entry again, now oldest
	gone("x", "ada")    // not there: nothing changes
	want := map[string][]string{"ada": {`"a1"`}, "bob": {`"b2"`, `"b1"`}, "cid": {`"c1"`}}
	check := func(when string) {
		t.Helper()
		got := map[string][]string{}
		var keys []string
		for k, es := range g.live.runs() {
			keys = append(keys, k)
			for _, e := range es {
				got[k] = append(got[k], string(e.meta))
			}
		}
		if !slices.IsSorted(keys) || len(keys) != g.live.keys || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: keys %v (count %d), entries %v, want %v", when, keys, g.live.keys, got, want)
		}
		for k := range want {
			if len(g.live.of(k)) != len(want[k]) {
				t.Fatalf("%s: of(%q) has %d entries, want %d", when, k, len(g.live.of(k)), len(want[k]))
			}
		}
	}
	check("after the sets")
	gone("a1", "ada")
	gone("b2", "bob")
	delete(want, "ada")
	want["bob"] = []string{`"b1"`}
	check("after two leaves")
	list := g.live.presences()
	if len(list) != 2 || list[0].Key != "bob" || list[1].Key != "cid" {
		t.Fatalf("presences %+v, want bob then cid", list)
	}
	if l := liveOf([]channellayer.Member{
		{Key: "e2", Info: []byte(`{"v":2,"k":"bob","m":2,"t":2}`)},
		{Key: "e1", Info: []byte(`{"v":2,"k":"bob","m":1,"t":1}`)},
		{Key: "e3", Info: []byte(`{"v":2,"k":"ada","t":3}`)},
		{Key: "e4", Info: []byte(`not a tracker's`)},
	}); l.keys != 2 || fmt.Sprintf("%s", l.state()) != "map[ada:[null] bob:[1 2]]" {
		t.Fatalf("liveOf: %d keys, state %s, want ada with null and bob with 1 then 2", l.keys, l.state())
	}
}

// BenchmarkLiveChange: one entry leaves a group of n and comes back, the
// cost of a change signal's entry in a large group.
func BenchmarkLiveChange(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var g group
			for i := range n {
				id := fmt.Sprintf("e%d", i)
				g.applyOne(op{id: idHash(id), key: "key-" + id, since: int64(i), meta: json.RawMessage(`1`)})
			}
			mid := fmt.Sprintf("e%d", n/2)
			set := op{id: idHash(mid), key: "key-" + mid, since: int64(n / 2), meta: json.RawMessage(`1`)}
			gone := op{id: set.id, key: set.key, gone: true}
			for b.Loop() {
				g.applyOne(gone)
				g.applyOne(set)
				g.touched = nil
			}
		})
	}
}

// TestLiveMatchesAMap: random sets and leaves over a few keys leave the
// same state as a plain map from key to entries kept oldest first.
func TestLiveMatchesAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		var g group
		type ent struct {
			id    uint64
			since int64
			meta  string
		}
		ref := map[string][]ent{}
		for step := range 200 {
			key := fmt.Sprintf("k%d", r.IntN(12))
			id := uint64(r.IntN(40))
			gone := r.IntN(3) == 0
			since := int64(r.IntN(50))
			meta := fmt.Sprintf("%d", step)
			g.applyOne(op{id: id, key: key, gone: gone, since: since, meta: json.RawMessage(meta)})
			es := slices.DeleteFunc(ref[key], func(e ent) bool { return e.id == id })
			if !gone {
				es = append(es, ent{id, since, meta})
				slices.SortFunc(es, func(a, b ent) int {
					return cmpLive(liveEntry{id: a.id, since: a.since}, liveEntry{id: b.id, since: b.since})
				})
			}
			if len(es) == 0 {
				delete(ref, key)
			} else {
				ref[key] = es
			}
			want := state{}
			for k, es := range ref {
				for _, e := range es {
					want[k] = append(want[k], json.RawMessage(e.meta))
				}
			}
			if got := g.live.state(); fmt.Sprintf("%s", got) != fmt.Sprintf("%s", want) || g.live.keys != len(ref) {
				t.Fatalf("round %d, step %d (%s %d gone=%v): state %s with %d keys, want %s", round, step, key, id, gone, got, g.live.keys, want)
			}
		}
	}
}
