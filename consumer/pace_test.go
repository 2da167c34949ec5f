package consumer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/dispatch"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// batchTransport records the batches written to it; Read waits until it is
// closed.
type batchTransport struct {
	mu      sync.Mutex
	frames  []string
	batches int
	closed  chan struct{}
	once    sync.Once
}

func (t *batchTransport) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	<-t.closed
	return 0, nil, websocket.CloseError{Code: StatusNormal}
}

func (t *batchTransport) Write(ctx context.Context, text []byte) error {
	return t.WriteBatch(ctx, [][]byte{text})
}

func (t *batchTransport) WriteBatch(ctx context.Context, texts [][]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.batches++
	for _, p := range texts {
		t.frames = append(t.frames, string(p))
	}
	return nil
}

func (t *batchTransport) Ping(ctx context.Context) error { return nil }
func (t *batchTransport) Close(code StatusCode, reason string) error {
	return t.CloseNow()
}
func (t *batchTransport) CloseNow() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// serveGroupEcho serves, over a batchTransport, a consumer in group "g"
// that sends every "e" event's body to its client; it returns once the
// consumer has joined. served receives Serve's result.
func serveGroupEcho(t *testing.T, lo channellayer.MemoryOptions, coalesce time.Duration) (*channellayer.Memory, *Server, *batchTransport, chan error) {
	t.Helper()
	layer, err := channellayer.NewMemory(lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { layer.Close(context.Background()) })
	srv, err := NewServer(Options{Layer: layer, Coalesce: coalesce})
	if err != nil {
		t.Fatal(err)
	}
	tr := &batchTransport{closed: make(chan struct{})}
	joined := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(context.Background(), Scope{Path: "/"}, Funcs{OnConnect: func(ctx context.Context, c *Conn) error {
			c.On("e", func(ctx context.Context, c *Conn, m channellayer.Message) error { return c.Send(m.Body) })
			return c.GroupAdd(ctx, "g")
		}}, func() (Transport, error) { close(joined); return tr, nil })
	}()
	<-joined
	return layer, srv, tr, served
}

// A burst of layer events, even spaced out a little, is handled and
// written in a few batches, not one write per event, and nothing is lost
// or reordered.
func TestBurstIsCoalesced(t *testing.T) {
	layer, srv, tr, served := serveGroupEcho(t, channellayer.MemoryOptions{}, 200*time.Millisecond)
	const n = 30
	var want []string
	for i := 0; i < n; i++ {
		m, err := channellayer.NewMessage("e", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(m.Body))
		if err := layer.GroupSend(context.Background(), "g", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // each event alone, unless paced: the pace is what is tested
	}
	var got []string
	var batches int
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		tr.mu.Lock()
		got, batches = slices.Clone(tr.frames), tr.batches
		tr.mu.Unlock()
		if len(got) < n {
			return fmt.Errorf("%d of %d frames arrived", len(got), n)
		}
		return nil
	}, "the burst's frames")
	if !slices.Equal(got, want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	if batches > n/3 {
		t.Fatalf("%d events 2 ms apart went out in %d writes", n, batches)
	}
	tr.CloseNow()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(context.Background())
}

// A paced connection does not wait for its tick while events pile up: past
// dispatch.PaceCap waiting events its dispatcher starts at once, long before the
// layer's channel overflows (which would close it with 1013).
func TestPacedBurstDoesNotOverflow(t *testing.T) {
	layer, srv, tr, served := serveGroupEcho(t, channellayer.MemoryOptions{Capacity: 100}, time.Hour)
	const n = 300
	m, _ := channellayer.NewMessage("e", nil)
	for i := 0; i < n; i++ {
		if err := layer.GroupSend(context.Background(), "g", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond) // a burst spread in time, as events come
	}
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		select {
		case <-tr.closed:
			t.Fatal("the connection was closed: its events overflowed while paced")
		default:
		}
		tr.mu.Lock()
		got := len(tr.frames)
		tr.mu.Unlock()
		if got <= n-dispatch.PaceCap {
			return fmt.Errorf("%d of %d frames written; at most %d may wait for the tick", got, n, dispatch.PaceCap-1)
		}
		return nil
	}, "the paced burst's frames")
	tr.CloseNow()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(context.Background())
}
