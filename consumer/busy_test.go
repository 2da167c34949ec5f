package consumer_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// TestMaxConnecting: with one turn in Connect, a second connection waits
// for it; one that waits too long is refused with 503 and Retry-After,
// counted by OnBusy; once the first Connect is done, the next gets in.
func TestMaxConnecting(t *testing.T) {
	defer consumer.SetConnectWait(200 * time.Millisecond)()
	var busy atomic.Int64
	release := make(chan struct{})
	var entered atomic.Int64
	s := serveSockets(t, consumer.Options{MaxConnecting: 1, OnBusy: func() { busy.Add(1) }}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			if entered.Add(1) == 1 {
				<-release // the first holds its turn until the test lets it go
			}
			return nil
		}}
	})
	ctx := testkit.ContextWithin(t, 20*time.Second)
	first := make(chan error, 1)
	go func() {
		ws, _, err := websocket.Dial(ctx, s.url, nil)
		if err == nil {
			defer ws.CloseNow()
		}
		first <- err
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return entered.Load() == 1 }, "the first Connect")

	_, resp, err := websocket.Dial(ctx, s.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a connection while the only turn is taken: %v, %+v; want 503", err, resp)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	if busy.Load() != 1 {
		t.Errorf("OnBusy called %d times, want 1", busy.Load())
	}
	if entered.Load() != 1 {
		t.Fatalf("the refused connection ran Connect (%d Connects)", entered.Load())
	}

	close(release)
	if err := testkit.Receive(t, first, 10*time.Second, "the first connection"); err != nil {
		t.Fatalf("the first connection: %v", err)
	}
	ws, _, err := websocket.Dial(ctx, s.url, nil)
	if err != nil {
		t.Fatalf("a connection after the turn was given back: %v", err)
	}
	ws.CloseNow()
}

// TestMaxConnectingWaits: a connection that finds no turn free waits for
// one rather than being refused at once.
func TestMaxConnectingWaits(t *testing.T) {
	defer consumer.SetConnectWait(5 * time.Second)()
	var entered atomic.Int64
	s := serveSockets(t, consumer.Options{MaxConnecting: 1}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			if entered.Add(1) == 1 {
				time.Sleep(100 * time.Millisecond) // holds the turn a while
			}
			return nil
		}}
	})
	ctx := testkit.ContextWithin(t, 20*time.Second)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			ws, _, err := websocket.Dial(ctx, s.url, nil)
			if err == nil {
				ws.CloseNow()
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := testkit.Receive(t, errs, 10*time.Second, "a connection"); err != nil {
			t.Fatalf("two connections, one turn, a wait long enough: %v", err)
		}
	}
	if entered.Load() != 2 {
		t.Fatalf("%d Connects, want 2", entered.Load())
	}
}

// TestDefaultMaxConnecting: with MaxConnecting unset, DefaultMaxConnecting
// connections run Connect at once, and one more waits for a turn.
func TestDefaultMaxConnecting(t *testing.T) {
	defer consumer.SetConnectWait(300 * time.Millisecond)()
	release := make(chan struct{})
	var entered atomic.Int64
	s := serveSockets(t, consumer.Options{}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			entered.Add(1)
			<-release
			return nil
		}}
	})
	let := sync.OnceFunc(func() { close(release) })
	t.Cleanup(let) // before the server's cleanup, which waits for the Connects
	ctx := testkit.ContextWithin(t, 60*time.Second)
	n := consumer.DefaultMaxConnecting
	errs := make(chan error, n)
	for range n {
		go func() {
			ws, _, err := websocket.Dial(ctx, s.url, nil)
			if err == nil {
				ws.CloseNow()
			}
			errs <- err
		}()
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return entered.Load() == int64(n) },
		"every connection of the default limit in Connect at once")

	_, resp, err := websocket.Dial(ctx, s.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connection %d while %d are in Connect: %v, %+v; want 503", n+1, n, err, resp)
	}
	let()
	for range n {
		if err := testkit.Receive(t, errs, 20*time.Second, "a connection"); err != nil {
			t.Fatalf("a connection within the default limit: %v", err)
		}
	}
	if got := entered.Load(); got != int64(n) {
		t.Fatalf("%d Connects, want %d (the refused one must not run it)", got, n)
	}
}
