package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		live, roots uint64
		want        int
		about       string
	}{
		{0, 0, 1600, "nothing live yet: the minimum heap (4 MiB × GOGC/100) at the floor"},
		{1 * mib, 1 * mib, 1600, "the minimum heap at the floor"},
		{10 * mib, 0, 540, "grows to the floor"},
		{10 * mib, 2 * mib, 450, "grows to the floor, roots counted"},
		{32 * mib, 0, 100, "grows to the floor"},
		{43 * mib, 0, 50, "1.5 times the live state passes the floor"},
		{200 * mib, 0, 50, "far above the floor"},
	}
	for _, c := range cases {
		got := gcPercentFor(c.live, c.roots, 50, 64*mib)
		if got != c.want {
			t.Errorf("%d MiB live, %d MiB roots: GOGC %d, want %d (%s)", c.live/mib, c.roots/mib, got, c.want, c.about)
		}
		if goal := max(c.live+(c.live+c.roots)*uint64(got)/100, 4*mib*uint64(got)/100); got > 50 && goal > 64*mib {
			t.Errorf("%d MiB live: GOGC %d puts the next collection at %d MiB, past the floor", c.live/mib, got, goal/mib)
		}
	}
}

// The policy sets the target after each collection: above the base while
// the live heap is below the floor, the base once it is not, and above it
// again when the heap shrank.
func TestGCPolicyFollowsTheLiveHeap(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	runtime.GC()
	const floor = 64 << 20
	p := newGCPolicy(50, floor)
	p.start()
	t.Cleanup(p.stop)
	waitGOGC(t, func(p int) bool { return p > 100 }, "above 100 with a few MiB live")
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(goal)
	if g := goal[0].Value.Uint64(); g > floor+floor/8 || g < floor-floor/8 {
		t.Errorf("with a few MiB live the next collection is due at %d MiB of heap, want about the floor's %d", g>>20, floor>>20)
	}

	func() {
		big := make([]byte, 96<<20) // live: more than the floor
		waitGOGC(t, func(p int) bool { return p == 50 }, "50 with 96 MiB live")
		runtime.KeepAlive(big)
	}()
	waitGOGC(t, func(p int) bool { return p > 100 }, "above 100 again once the 96 MiB are garbage")
}

// waitGOGC collects until the collector's target satisfies ok.
func waitGOGC(t *testing.T, ok func(int) bool, want string) {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		metrics.Read(s)
		p := int(s[0].Value.Uint64())
		if ok(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d after collections for 10 s; want %s", p, want)
		}
		time.Sleep(10 * time.Millisecond) // the finalizer runs on its own goroutine
	}
}
