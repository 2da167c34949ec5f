package consumer_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
)

// Events that wait together are handed to their handlers together, under
// one lock; a handler that panics closes the connection with 1011, and the
// events behind it in the same batch reach no handler.
func TestEventsAfterAPanicAreNotHandled(t *testing.T) {
	var (
		mu      sync.Mutex
		handled []string
		channel string
	)
	started, release := make(chan struct{}), make(chan struct{})
	f := func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			channel = c.Channel()
			c.On("t", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				mu.Lock()
				handled = append(handled, string(m.Body))
				mu.Unlock()
				switch string(m.Body) {
				case `"first"`:
					close(started)
					<-release // the next two queue meanwhile, and are taken together
				case `"boom"`:
					panic("boom")
				}
				return nil
			})
			return nil
		}}
	}
	com := connect(t, f, consumertest.Options{})
	layer := com.Layer()
	send := func(body string) {
		if err := layer.Send(timeout(t), channel, channellayer.Message{Type: "t", Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	send(`"first"`)
	<-started
	send(`"boom"`)
	send(`"after"`)
	close(release)
	expectClosed(t, com, consumer.StatusInternalError)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{`"first"`, `"boom"`}; !slices.Equal(handled, want) {
		t.Fatalf("handled %q; want %q (nothing after the panic)", handled, want)
	}
}
