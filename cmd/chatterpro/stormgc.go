package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// stormGCPercent is the collector's target while a reconnect storm lasts.
// When a node dies and its people all come back on the others, the
// survivors' CPU is the bound, and at the usual target (gcPercent) the
// collector had 15 % of it. In the 100 000-people cluster (BENCHMARKS.md,
// runs 54 and 55) the switch cut the collector's CPU in the kill's first
// 30 s from 4.5-4.8 s to 2.9 s of the nodes' 31 s, about what a target of
// 100 throughout did (2.6 s, at 14.2 KiB per connection instead of 11.4):
// the target goes back once the storm is over, so memory does not grow.
const stormGCPercent = 100

// stormQuiet is how long after the last refused join a storm is over.
const stormQuiet = 10 * time.Second

// stormGC raises the collector's target while sockets are refused because
// too many are joining at once (--max-connecting), and lowers it again
// stormQuiet after the last.
type stormGC struct {
	base, storm int
	last        atomic.Int64 // Unix ns of the last refusal; 0: none
	raised      bool         // run's
}

// busy notes a refused join. It does not block.
func (g *stormGC) busy() { g.last.Store(time.Now().UnixNano()) }

// run checks every second until ctx ends, then puts the base back.
func (g *stormGC) run(ctx context.Context, set func(int) int, log *slog.Logger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if g.raised {
				set(g.base)
			}
			return
		case now := <-tick.C:
			g.check(now, set, log)
		}
	}
}

// check raises or lowers the target as the storm starts or ends at now.
func (g *stormGC) check(now time.Time, set func(int) int, log *slog.Logger) {
	last := g.last.Load()
	stormy := last != 0 && now.Sub(time.Unix(0, last)) < stormQuiet
	switch {
	case stormy && !g.raised:
		set(g.storm)
		g.raised = true
		log.Info("joins refused as busy: the collector's target is raised while they last", "gc_percent", g.storm)
	case !stormy && g.raised:
		set(g.base)
		g.raised = false
		log.Info("no join refused for a while: the collector's target is back", "gc_percent", g.base)
	}
}
