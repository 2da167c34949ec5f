package consumertest_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/routing"
)

// TestDialThroughRouter: Identify, the origin check and path parameters
// are exercised without a network.
func TestDialThroughRouter(t *testing.T) {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	srv, err := consumer.NewServer(consumer.Options{Layer: layer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(ctx); layer.Close(ctx) })
	router, err := routing.New(routing.Options{
		Server:         srv,
		AllowedOrigins: []string{"https://friend.test"},
		Identify: func(r *http.Request) (*consumer.User, error) {
			c, err := r.Cookie("who")
			if err != nil {
				return nil, errors.New("log in first")
			}
			return &consumer.User{Name: c.Value, Session: "s-" + c.Value}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	router.Consumer("/ws/room/{name}/", func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return c.SendJSON(map[string]string{"room": c.Scope().Param("name"), "user": c.Scope().User.Name})
		}}
	})
	h := consumertest.Serve(t, router)

	header := func(kv ...string) http.Header {
		hd := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hd.Add(kv[i], kv[i+1])
		}
		return hd
	}
	refused := []struct {
		name   string
		path   string
		header http.Header
		status int
	}{
		{"no session", "/ws/room/lobby/", header(), http.StatusForbidden},
		{"foreign origin", "/ws/room/lobby/", header("Cookie", "who=ada", "Origin", "https://evil.test"), http.StatusForbidden},
		{"no route", "/ws/nope/", header("Cookie", "who=ada"), http.StatusNotFound},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := h.Dial(ctx, tt.path, consumertest.DialOptions{Header: tt.header})
			if err == nil || resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("Dial = %v, %v; want refused with %d", resp, err, tt.status)
			}
		})
	}
	for _, origin := range []string{"", "http://example.test", "https://friend.test"} {
		c, _, err := h.Dial(ctx, "/ws/room/lobby/", consumertest.DialOptions{Header: header("Cookie", "who=ada", "Origin", origin)})
		if err != nil {
			t.Fatalf("Dial with origin %q: %v", origin, err)
		}
		var got struct{ Room, User string }
		if err := c.ReceiveJSON(ctx, &got); err != nil || got.Room != "lobby" || got.User != "ada" {
			t.Fatalf("got %+v, %v; want room lobby, user ada", got, err)
		}
		c.SendText(ctx, `{"type":"ping","ref":1}`)
		if b, err := c.Receive(ctx); err != nil || string(b) != `{"type":"pong","ref":1}` {
			t.Fatalf("ping got %s, %v", b, err)
		}
		c.Close(consumer.StatusNormal, "")
	}
}
