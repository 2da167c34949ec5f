//go:build !race

// Under the race detector sync.Pool drops some of what is put back, on
// purpose: make test runs this file without it.

package slicepool_test

import (
	"testing"

	"github.com/chatterpro/chatterpro/internal/slicepool"
)

// Steady use of pooled slices allocates nothing.
func TestAllocations(t *testing.T) {
	p := slicepool.New[[]byte](8, 64)
	var s [][]byte
	p.Put(p.Get(64))
	p.Put(p.Get(8))
	allocs := testing.AllocsPerRun(100, func() {
		for range 20 {
			s = p.Append(s, nil)
		}
		p.Put(s)
		s = nil
	})
	if allocs > 0 {
		t.Errorf("%v allocations per burst, want 0", allocs)
	}
}
