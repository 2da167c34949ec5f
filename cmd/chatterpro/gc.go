package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// The collector's policy. gcPercent (GOGC 50) keeps a node holding many
// idle connections near 1.5 times its live state. A small node, whose live
// state is a few megabytes, would then collect every second or so under a
// steady chat, and each collection's mark phase takes a core's share for
// ten milliseconds or more of two: the messages that arrive meanwhile are
// the slowest of the run (BENCHMARKS.md, many rooms on Redis). So the heap
// may also grow to gcFloor before a collection: after each collection the
// target is raised for as long as 1.5 times the live state stays below
// the floor (and no further: a target so high that the runtime's minimum
// heap, which grows with it, passes the floor would let the heap grow far
// beyond it). A node with more live state than gcFloor/1.5 runs at GOGC
// 50 as before; a small one holds up to gcFloor of heap.
const (
	gcPercent = 50
	gcFloor   = 64 << 20
)

// setGCPolicy applies gcPercent and gcFloor, unless the GOGC environment
// variable chose a target itself.
func setGCPolicy() {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	newGCPolicy(gcPercent, gcFloor).start()
}

// gcPolicy sets the collector's target after each collection.
type gcPolicy struct {
	base   int    // the target (GOGC) of a heap above the floor
	floor  uint64 // bytes the heap may grow to before a collection in any case
	sample []metrics.Sample

	mu      sync.Mutex
	last    int  // the target set last; 0: none yet
	stopped bool // no more turns after the next collection
}

func newGCPolicy(base int, floor uint64) *gcPolicy {
	return &gcPolicy{base: base, floor: floor, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
	}}
}

// gcPercentFor is the target that lets a heap of live bytes, with roots
// bytes of stacks and globals to scan, grow to floor before the next
// collection, and never lower than base. The runtime's next collection
// comes when the heap reaches live + (live + roots) × GOGC/100, and no
// sooner than at its minimum heap, 4 MiB × GOGC/100: the target is kept
// low enough that neither passes the floor.
func gcPercentFor(live, roots uint64, base int, floor uint64) int {
	if live >= floor {
		return base
	}
	p := (floor - live) * 100 / max(live+roots, 1)
	p = min(p, floor*100/(4<<20))
	return max(int(p), base)
}

// start sets the target now and after every collection (a finalizer that
// re-arms itself runs after each).
func (p *gcPolicy) start() {
	p.retune()
	s := &gcSentinel{p: p}
	runtime.SetFinalizer(s, (*gcSentinel).collected)
}

// stop ends the turns after the next collection.
func (p *gcPolicy) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
}

func (p *gcPolicy) retune() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	metrics.Read(p.sample)
	var v [3]uint64
	for i, s := range p.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if want := gcPercentFor(v[0], v[1]+v[2], p.base, p.floor); want != p.last {
		debug.SetGCPercent(want)
		p.last = want
	}
	return true
}

// gcSentinel is garbage as soon as it is made; its finalizer runs after
// the collection that found it, retunes, and makes it garbage again.
type gcSentinel struct {
	p *gcPolicy
	_ [16]byte // not a tiny allocation, which may share a finalizer's fate with others
}

func (s *gcSentinel) collected() {
	if s.p.retune() {
		runtime.SetFinalizer(s, (*gcSentinel).collected)
	}
}
