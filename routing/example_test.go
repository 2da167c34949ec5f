package routing_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/routing"
)

// A router sends /ws/rooms/{room}/ to a consumer that greets the room.
func Example() {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	srv, _ := consumer.NewServer(consumer.Options{Layer: layer})
	router, _ := routing.New(routing.Options{Server: srv})
	router.Consumer("/ws/rooms/{room}/", func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return c.Send([]byte("welcome to " + c.Scope().Param("room")))
		}}
	})
	hs := httptest.NewServer(router)
	defer hs.Close()
	defer srv.Shutdown(ctx)

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws/rooms/lobby/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.CloseNow()
	_, b, _ := ws.Read(ctx)
	fmt.Println(string(b))
	ws.Close(websocket.StatusNormalClosure, "")
	// Output: welcome to lobby
}
