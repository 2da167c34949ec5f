package main

import (
	"log/slog"
	"testing"
	"time"
)

// The collector's target goes up at the first refused join and back
// stormQuiet after the last, once each way.
func TestStormRaisesGCTarget(t *testing.T) {
	g := &stormGC{base: 50, storm: 100}
	var sets []int
	set := func(p int) int { sets = append(sets, p); return 0 }
	log := slog.New(slog.DiscardHandler)
	start := time.Now()
	g.check(start, set, log)
	if len(sets) != 0 {
		t.Fatalf("targets set with no refusal: %v", sets)
	}
	g.last.Store(start.UnixNano())
	for i := range 5 {
		g.check(start.Add(time.Duration(i)*time.Second), set, log)
	}
	if len(sets) != 1 || sets[0] != 100 {
		t.Fatalf("targets set during a storm: %v, want [100]", sets)
	}
	g.check(start.Add(stormQuiet-time.Millisecond), set, log)
	g.check(start.Add(stormQuiet), set, log)
	g.check(start.Add(stormQuiet+time.Second), set, log)
	if len(sets) != 2 || sets[1] != 50 {
		t.Fatalf("targets set after the storm: %v, want [100 50]", sets)
	}
}
