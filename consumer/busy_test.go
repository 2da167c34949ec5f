package consumer_test

import (
	"context"
	"net/http"
	"slices"
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

// TestClientGoneWhileWaiting: a connection whose client goes away while it
// waits for a turn in Connect gives up its place: the turn, once free,
// goes to the next client, and the gone one's Connect never runs.
func TestClientGoneWhileWaiting(t *testing.T) {
	defer consumer.SetConnectWait(20 * time.Second)() // longer than the test waits: only the client's going ends the wait
	release := make(chan struct{})
	let := sync.OnceFunc(func() { close(release) })
	var mu sync.Mutex
	var connects []string // the paths that ran Connect, in order
	s := serveSockets(t, consumer.Options{MaxConnecting: 1}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			mu.Lock()
			connects = append(connects, c.Scope().Path)
			first := len(connects) == 1
			mu.Unlock()
			if first {
				<-release // holds the only turn until the test lets it go
			}
			return nil
		}}
	})
	t.Cleanup(let) // before the server's cleanup, which waits for the Connects
	ctx := testkit.ContextWithin(t, 30*time.Second)
	opened := make(chan error, 2)
	open := func(ctx context.Context, path string) {
		ws, _, err := websocket.Dial(ctx, s.url+path, nil)
		if err == nil {
			ws.CloseNow()
		}
		opened <- err
	}
	go open(ctx, "/first")
	testkit.Eventually(t, 5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(connects) == 1 }, "the first Connect")

	gone, leave := context.WithCancel(ctx)
	left := make(chan error, 1)
	go func() {
		_, _, err := websocket.Dial(gone, s.url+"/gone", nil)
		left <- err
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return consumer.Waiting(s.srv) == 1 }, "the second connection waiting for the turn")
	leave()
	if err := testkit.Receive(t, left, 5*time.Second, "the dial given up"); err == nil {
		t.Fatal("a dial whose context ended succeeded")
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return consumer.Waiting(s.srv) == 0 },
		"the server to stop waiting for a turn for a client that went away")

	go open(ctx, "/next")
	testkit.Eventually(t, 5*time.Second, func() bool { return consumer.Waiting(s.srv) == 1 }, "the next connection waiting for the turn")
	let()
	for range 2 {
		if err := testkit.Receive(t, opened, 10*time.Second, "a connection"); err != nil {
			t.Fatalf("a connection: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/ws/first", "/ws/next"}; !slices.Equal(connects, want) {
		t.Errorf("Connects ran for %q, want %q: the client that went away must not take a turn", connects, want)
	}
}

// TestClientGoneDuringConnect: when the client goes away while Connect
// runs, Connect's context ends, and the presence entry it made goes at
// once, without the grace period: nobody was ever connected.
func TestClientGoneDuringConnect(t *testing.T) {
	entered := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	var disconnects atomic.Int64
	s := serveSockets(t, consumer.Options{PresenceGrace: time.Minute}, func() consumer.Consumer {
		return consumer.Funcs{
			OnConnect: func(ctx context.Context, c *consumer.Conn) error {
				if err := c.Track(ctx, "room", "ada", nil); err != nil {
					return err
				}
				entered <- struct{}{}
				select {
				case <-ctx.Done():
					ended <- struct{}{}
					return ctx.Err()
				case <-time.After(20 * time.Second):
					return nil
				}
			},
			OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) { disconnects.Add(1) },
		}
	})
	ctx := testkit.ContextWithin(t, 30*time.Second)
	gone, leave := context.WithCancel(ctx)
	left := make(chan error, 1)
	go func() {
		_, _, err := websocket.Dial(gone, s.url, nil)
		left <- err
	}()
	testkit.Receive(t, entered, 10*time.Second, "Connect tracked the client")
	if who, err := s.srv.Presence(ctx, "room"); err != nil || len(who) != 1 {
		t.Fatalf("presence while Connect runs: %v, %v; want ada", who, err)
	}
	leave()
	if err := testkit.Receive(t, left, 5*time.Second, "the dial given up"); err == nil {
		t.Fatal("a dial whose context ended succeeded")
	}
	testkit.Receive(t, ended, 5*time.Second, "Connect's context to end when its client went away")
	testkit.Eventually(t, 5*time.Second, func() bool {
		who, err := s.srv.Presence(ctx, "room")
		return err == nil && len(who) == 0
	}, "the entry of a client that never connected gone at once, not after the grace period")
	if n := disconnects.Load(); n != 0 {
		t.Errorf("Disconnect ran %d times for a connection its Connect refused", n)
	}
}
