package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
)

// got is the frame the handlers below send for each event they handle.
type got struct {
	Type  string `json:"type"`
	T     string `json:"t"`     // the event's type
	Gen   int    `json:"gen"`   // the generation of the handler that took it
	Token int    `json:"token"` // the event's token
}

// genHandler returns the handler of generation gen: it reports which
// generation took the event. With next set, it replaces itself (On, from
// inside a handler) with the following generation.
func genHandler(gen int, next bool) consumer.EventHandler {
	return func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
		var ev struct{ Token int }
		if err := m.Decode(&ev); err != nil {
			return err
		}
		if next {
			c.On(m.Type, genHandler(gen+1, true))
		}
		return c.SendJSON(got{Type: "got", T: m.Type, Gen: gen, Token: ev.Token})
	}
}

// Conn.On is safe wherever it is documented to be callable, while layer
// events are dispatched: from functions run by Do on other goroutines
// (three types, each replaced between its events: every event reaches the
// handler registered last before it was sent), and from a handler that
// replaces itself in the middle of a burst of its own type (the handler
// cache must not hand out the replaced one: generations come one by one).
// Run with -race.
func TestOnWhileDispatching(t *testing.T) {
	ctx := context.Background()
	conns := make(chan *consumer.Conn, 1)
	com := consumertest.New(t, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("x", genHandler(1, true))
			conns <- c
			return nil
		}}
	}, consumertest.Options{})
	if err := com.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	c := <-conns
	layer := com.Layer()
	send := func(typ string, token int) error {
		m, err := channellayer.NewMessage(typ, map[string]int{"token": token})
		if err != nil {
			return err
		}
		return layer.Send(ctx, c.Channel(), m)
	}

	types := []string{"a", "b", "c", "x"}
	replies := make(map[string]chan got, len(types))
	for _, typ := range types {
		replies[typ] = make(chan got, 64)
	}
	readErr := make(chan error, 1)
	go func() {
		for {
			var g got
			if err := com.ReceiveJSON(ctx, &g); err != nil {
				readErr <- err
				return
			}
			ch := replies[g.T]
			if ch == nil {
				readErr <- fmt.Errorf("a frame for unknown type %q", g.T)
				return
			}
			ch <- g
		}
	}()

	const rounds, burst, bursts = 60, 20, 6
	var wg sync.WaitGroup
	errs := make(chan error, len(types))
	for _, typ := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= rounds; k++ {
				if err := c.Do(func(ctx context.Context, c *consumer.Conn) error {
					c.On(typ, genHandler(k, false))
					return nil
				}); err != nil {
					errs <- fmt.Errorf("Do: %w", err)
					return
				}
				if err := send(typ, k); err != nil {
					errs <- err
					return
				}
				if g := <-replies[typ]; g.Gen != k || g.Token != k {
					errs <- fmt.Errorf("type %s: event %d handled by generation %d, want %d", typ, g.Token, g.Gen, k)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		want := 1
		for b := 0; b < bursts; b++ {
			for i := 0; i < burst; i++ {
				if err := send("x", want+i); err != nil {
					errs <- err
					return
				}
			}
			for i := 0; i < burst; i++ {
				if g := <-replies["x"]; g.Gen != want || g.Token != want {
					errs <- fmt.Errorf("type x: event %d handled by generation %d, want %d (a replaced handler ran)", g.Token, g.Gen, want)
					return
				}
				want++
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case err := <-readErr:
		t.Fatalf("reading frames: %v", err)
	default:
	}

	// Do returns fn's error, and the error closes the connection (1011).
	boom := errors.New("boom")
	if err := c.Do(func(context.Context, *consumer.Conn) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	if code, err := com.Closed(ctx); err != nil || code != consumer.StatusInternalError {
		t.Fatalf("after Do's error: closed %d, %v; want 1011", code, err)
	}
	<-readErr
}
