package stack_test

import (
	"testing"

	"github.com/chatterpro/chatterpro/internal/stack"
)

// The buffers stay on the stack: one that escaped to the heap would cost
// an allocation on every call and grow no stack.
func TestGrowAllocatesNothing(t *testing.T) {
	for name, grow := range map[string]func(){"Grow4K": stack.Grow4K, "Grow16K": stack.Grow16K} {
		if n := testing.AllocsPerRun(100, grow); n != 0 {
			t.Errorf("%s: %v allocations a call, want 0", name, n)
		}
	}
}
