package dispatch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// countHost counts what its dispatchers hand over and how many handle
// events at once.
type countHost struct {
	ctx      context.Context
	begun    atomic.Int32 // Begin calls not yet ended
	handling atomic.Int32
	overlap  atomic.Int32 // Handle while another dispatcher handled
	outside  atomic.Int32 // Handle outside Begin and End
	mu       sync.Mutex
	seen     map[string]int
	failed   error
}

func (h *countHost) Context() context.Context { return h.ctx }
func (h *countHost) Begin()                   { h.begun.Add(1) }
func (h *countHost) End()                     { h.begun.Add(-1) }
func (h *countHost) Handle(msgs []channellayer.Message) bool {
	if h.handling.Add(1) != 1 {
		h.overlap.Add(1)
	}
	if h.begun.Load() <= 0 {
		h.outside.Add(1)
	}
	h.mu.Lock()
	for _, m := range msgs {
		h.seen[string(m.Body)]++
	}
	h.mu.Unlock()
	h.handling.Add(-1)
	return h.ctx.Err() == nil
}
func (h *countHost) Failed(err error) {
	h.mu.Lock()
	h.failed = err
	h.mu.Unlock()
}

// eachLayer is the memory layer without channellayer.Drainer: its
// dispatchers take one event per call and hand them over in batches
// (dispatchEach).
type eachLayer struct {
	channellayer.Layer
	channellayer.Notifier
}

// Senders on several goroutines, direct and through a group, paced and
// not: the layer calls back only on an arrival to an empty channel (and
// at PaceCap), yet every event is handled exactly once, by one dispatcher
// at a time, between its Begin and End.
func TestEveryEventOnceOneDispatcherAtATime(t *testing.T) {
	for _, tc := range []struct {
		coalesce time.Duration
		drain    bool
	}{{0, true}, {2 * time.Millisecond, true}, {0, false}, {2 * time.Millisecond, false}} {
		coalesce := tc.coalesce
		t.Run(fmt.Sprintf("coalesce %v drain %v", coalesce, tc.drain), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			layer, err := channellayer.NewMemory(channellayer.MemoryOptions{Capacity: 4000})
			if err != nil {
				t.Fatal(err)
			}
			defer layer.Close(context.Background())
			ch, err := layer.NewChannel(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := layer.GroupAdd(ctx, "room", ch); err != nil {
				t.Fatal(err)
			}
			h := &countHost{ctx: ctx, seen: make(map[string]int)}
			var g tasks.Group
			var d Dispatcher
			var l channellayer.Layer = layer
			if !tc.drain {
				l = eachLayer{layer, layer}
			}
			cfg := NewConfig(l, coalesce)
			if (cfg.drainer != nil) != tc.drain || cfg.notifier == nil {
				t.Fatalf("drainer %v notifier %v; want drainer %v and a notifier", cfg.drainer != nil, cfg.notifier != nil, tc.drain)
			}
			d.Init(cfg, ch, &g, h)
			if err := d.Start(); err != nil {
				t.Fatal(err)
			}
			const senders, each = 8, 400
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						m := channellayer.Message{Type: "t", Body: []byte(fmt.Sprintf(`{"type":"t","n":"%d-%d"}`, s, i))}
						var err error
						if i%2 == 0 {
							err = layer.Send(ctx, ch, m)
						} else {
							err = layer.GroupSend(ctx, "room", m)
						}
						if err != nil {
							t.Errorf("send %d-%d: %v", s, i, err)
							return
						}
						if i%50 == 0 {
							time.Sleep(time.Millisecond) // let the channel empty now and then
						}
					}
				}()
			}
			wg.Wait()
			testkit.EventuallyNil(t, 10*time.Second, func() error {
				h.mu.Lock()
				defer h.mu.Unlock()
				if h.failed != nil {
					return fmt.Errorf("dispatcher failed: %v", h.failed)
				}
				if len(h.seen) != senders*each {
					return fmt.Errorf("%d of %d events handled", len(h.seen), senders*each)
				}
				return nil
			}, "every event handled")
			d.Stop()
			cancel()
			g.Stop()
			for body, n := range h.seen {
				if n != 1 {
					t.Fatalf("event %s handled %d times", body, n)
				}
			}
			if n := h.overlap.Load(); n != 0 {
				t.Fatalf("%d events handled while another dispatcher handled one", n)
			}
			if n := h.outside.Load(); n != 0 {
				t.Fatalf("%d events handled outside Begin and End", n)
			}
			if n := h.begun.Load(); n != 0 {
				t.Fatalf("%d Begin calls without End", n)
			}
		})
	}
}
