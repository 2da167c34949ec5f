//go:build !race

// The race detector makes sync.Pool drop a quarter of what is put back, on
// purpose, so pooled buffers are reallocated now and then and allocation
// counts mean nothing under it: make test runs this file without it.

package consumer_test

import (
	"runtime"
	"testing"

	"github.com/chatterpro/chatterpro/consumer"
)

// TestFanoutAllocationsFlat: a member more costs no allocation on the
// fan-out path, whether a connection's events are paced into batches or
// each starts a dispatcher of its own.
func TestFanoutAllocationsFlat(t *testing.T) {
	const small, big, msgs = 1, 200, 400
	perMsg := func(members, batch int, opts consumer.Options) float64 {
		f := newFanout(t, members, opts)
		for range 5 {
			f.send(batch)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for sent := 0; sent < msgs; sent += batch {
			f.send(batch)
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / msgs
	}
	// One allocation more per member (an encoding, a closure, a timer per
	// delivery) costs 1 per added member.
	const bound = 0.05
	for _, tc := range []struct {
		name  string
		batch int
		opts  consumer.Options
	}{
		{"paced", fanoutBatch, consumer.Options{}},     // bursts written together (the default)
		{"unpaced", 1, consumer.Options{Coalesce: -1}}, // a dispatcher goroutine per member and message
	} {
		t.Run(tc.name, func(t *testing.T) {
			a1, a2 := perMsg(small, tc.batch, tc.opts), perMsg(big, tc.batch, tc.opts)
			perMember := (a2 - a1) / (big - small)
			t.Logf("allocations per message: %.2f with %d member, %.2f with %d; %.4f per added member (bound %.2f)", a1, small, a2, big, perMember, bound)
			if perMember > bound {
				t.Errorf("fan-out allocates %.3f times per member and message (%.2f per message with %d members, %.2f with %d); want at most %.2f",
					perMember, a2, big, a1, small, bound)
			}
		})
	}
}
