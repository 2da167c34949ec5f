package wire_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer/internal/outq"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/consumer/internal/wire"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// recorder is a Transport and a Host that records what happens to it, in
// order. Writes block while gate is held.
type recorder struct {
	gate sync.RWMutex

	mu      sync.Mutex
	events  []string
	closing []websocket.StatusCode
	closed  chan struct{}
}

func newRecorder() *recorder { return &recorder{closed: make(chan struct{})} }

func (r *recorder) add(e string) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

func (r *recorder) Write(ctx context.Context, text []byte) error {
	r.gate.RLock()
	defer r.gate.RUnlock()
	r.add("write " + string(text))
	return nil
}

func (r *recorder) Close(code websocket.StatusCode, reason string) error {
	r.add("close " + reason)
	return nil
}

func (r *recorder) CloseNow() error { r.add("closenow"); return nil }

func (r *recorder) Closing(code websocket.StatusCode) {
	r.mu.Lock()
	r.closing = append(r.closing, code)
	r.mu.Unlock()
}

func (r *recorder) Closed() { close(r.closed) }

func (r *recorder) wait(t *testing.T) []string {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the transport was not closed")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func newWire(t *testing.T, queueBytes int) (*wire.Wire, *recorder, *tasks.Group) {
	var g tasks.Group
	t.Cleanup(g.Stop)
	r := newRecorder()
	var w wire.Wire
	w.Init(queueBytes, 5*time.Second, &g, r)
	return &w, r, &g
}

// How each mode ends the transport, with frames queued before the
// transport was attached.
func TestCloseModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode wire.Mode
		want []string
	}{
		{"flush writes what is queued, then the close frame", wire.Flush, []string{"write a", "write b", "close bye", "closenow"}},
		{"now drops what is queued", wire.Now, []string{"close bye", "closenow"}},
		{"peer writes nothing", wire.Peer, []string{"closenow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r, _ := newWire(t, 100)
			for _, f := range []string{"a", "b"} {
				if err := w.Send([]byte(f)); err != nil {
					t.Fatal(err)
				}
			}
			r.gate.Lock() // the writer waits until the close is decided
			w.Attach(r)
			w.Close(4000, "bye", tc.mode)
			w.Close(4001, "again", wire.Now) // only the first counts
			r.gate.Unlock()
			got := r.wait(t)
			if tc.mode == wire.Now || tc.mode == wire.Peer {
				// The writer may have taken the frames before Close
				// dropped them; what follows the close must not be.
				got = slices.DeleteFunc(got, func(e string) bool { return e == "write a" || e == "write b" })
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("transport saw %q, want %q", got, tc.want)
			}
			if w.Code() != 4000 || len(r.closing) != 1 || r.closing[0] != 4000 {
				t.Fatalf("code %d, Closing calls %v; want 4000 once", w.Code(), r.closing)
			}
			if err := w.Send([]byte("late")); !errors.Is(err, outq.ErrClosed) {
				t.Fatalf("Send after Close: %v, want outq.ErrClosed", err)
			}
		})
	}
}

// A close before Attach waits for the transport, then proceeds.
func TestCloseBeforeAttach(t *testing.T) {
	w, r, _ := newWire(t, 100)
	w.Send([]byte("a"))
	w.Close(1012, "restart", wire.Flush)
	w.Attach(r)
	if got, want := r.wait(t), []string{"write a", "close restart", "closenow"}; !slices.Equal(got, want) {
		t.Fatalf("transport saw %q, want %q", got, want)
	}
}

// A frame that does not fit closes with 1013 at once.
func TestFullQueueCloses1013(t *testing.T) {
	w, r, _ := newWire(t, 4)
	r.gate.Lock() // nothing is written: the queue fills
	w.Attach(r)
	w.Send([]byte("abcd"))
	if err := w.Send([]byte("e")); !errors.Is(err, outq.ErrFull) {
		t.Fatalf("Send over the limit: %v, want outq.ErrFull", err)
	}
	r.gate.Unlock()
	r.wait(t)
	if w.Code() != websocket.StatusTryAgainLater {
		t.Fatalf("code %d, want 1013", w.Code())
	}
}

// Frames sent while held go out at Release, in one batch, in order.
func TestHoldRelease(t *testing.T) {
	w, r, _ := newWire(t, 100)
	w.Attach(r)
	w.Hold()
	w.Send([]byte("1"))
	w.Send([]byte("2"))
	r.mu.Lock()
	n := len(r.events)
	r.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d writes while held", n)
	}
	w.Release() // writes on this goroutine
	r.mu.Lock()
	got := slices.Clone(r.events)
	r.mu.Unlock()
	if want := []string{"write 1", "write 2"}; !slices.Equal(got, want) {
		t.Fatalf("after Release: %q, want %q", got, want)
	}
	w.Close(1000, "", wire.Flush)
	r.wait(t)
}
