package chat

import (
	"context"
	"sync"
)

// inflight counts a socket's messages that the layer is still recording.
type inflight struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed when n falls; made by the first waiter
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	f.n--
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
	f.mu.Unlock()
}

// waitBelow waits until fewer than limit messages are in flight, or ctx ends.
func (f *inflight) waitBelow(ctx context.Context, limit int) error {
	for {
		f.mu.Lock()
		if f.n < limit {
			f.mu.Unlock()
			return nil
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
