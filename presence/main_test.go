package presence

import (
	"context"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// newMemory returns a memory layer that is closed when the test ends.
func newMemory(t *testing.T) *channellayer.Memory {
	t.Helper()
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close(context.Background()) })
	return mem
}

// newTracker returns a tracker on l that is closed when the test ends
// (before the layers made earlier in the test).
func newTracker(t *testing.T, ctx context.Context, l channellayer.Layer, opts Options) *Tracker {
	t.Helper()
	tr, err := New(ctx, l, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr
}
