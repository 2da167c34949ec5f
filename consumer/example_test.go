package consumer_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/routing"
)

// Echo greets a client, then answers every frame with the same text.
type Echo struct{}

func (Echo) Connect(ctx context.Context, c *consumer.Conn) error             { return c.Send([]byte("hello")) }
func (Echo) Receive(ctx context.Context, c *consumer.Conn, b []byte) error   { return c.Send(b) }
func (Echo) Disconnect(context.Context, *consumer.Conn, consumer.StatusCode) {}

// The consumer tested without a network...
func TestEcho(t *testing.T) {
	ctx := context.Background()
	com := consumertest.New(t, func() consumer.Consumer { return Echo{} }, consumertest.Options{})
	if err := com.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	com.SendText(ctx, "ping")
	for _, want := range []string{"hello", "ping"} {
		if got, err := com.Receive(ctx); string(got) != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
}

// ...and served over a real socket.
func Example_echo() {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	srv, _ := consumer.NewServer(consumer.Options{Layer: layer})
	router, _ := routing.New(routing.Options{Server: srv})
	router.Consumer("/ws/echo/", func() consumer.Consumer { return Echo{} })
	hs := httptest.NewServer(router)
	defer hs.Close()
	defer srv.Shutdown(ctx)

	ws, _, _ := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws/echo/", nil)
	defer ws.CloseNow()
	ws.Write(ctx, websocket.MessageText, []byte("ping"))
	for range 2 {
		_, b, _ := ws.Read(ctx)
		fmt.Println(string(b))
	}
	ws.Close(websocket.StatusNormalClosure, "bye")
	// Output:
	// hello
	// ping
}
