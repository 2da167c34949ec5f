package consumer_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/presence"
	"github.com/chatterpro/chatterpro/routing"
)

// serve runs f's consumer at /ws/ on a memory layer and returns a dialer
// and a stop function, for the examples.
func serve(layer channellayer.Layer, opts consumer.Options, f routing.Factory) (dial func(query string) *websocket.Conn, stop func()) {
	opts.Layer = layer
	srv, _ := consumer.NewServer(opts)
	router, _ := routing.New(routing.Options{Server: srv})
	router.Consumer("/ws/", f)
	hs := httptest.NewServer(router)
	dial = func(query string) *websocket.Conn {
		ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws/"+query, nil)
		if err != nil {
			panic(err)
		}
		return ws
	}
	return dial, func() { srv.Shutdown(context.Background()); hs.Close() }
}

// withoutID drops the history ID, which changes from run to run.
var withoutID = regexp.MustCompile(`"id":"[0-9-]+",`)

func read(ws *websocket.Conn) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := ws.Read(ctx)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func write(ws *websocket.Conn, s string) {
	ws.Write(context.Background(), websocket.MessageText, []byte(s))
}

// A JSON consumer registers a handler per client frame type; a frame with a
// "ref" gets exactly one reply, ok with the handler's data or an error.
func ExampleJSON() {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	dial, stop := serve(layer, consumer.Options{}, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.HandleFrame("double", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
				var in struct{ N int }
				if err := f.Decode(&in); err != nil {
					return nil, err
				}
				if in.N < 0 {
					return nil, consumer.Reject(consumer.CodeInvalid, "n must not be negative")
				}
				return map[string]int{"n": 2 * in.N}, nil
			})
			return nil
		}}
	})
	defer stop()
	ws := dial("")
	defer ws.CloseNow()
	for _, f := range []string{`{"type":"double","ref":1,"n":21}`, `{"type":"double","ref":2,"n":-1}`, `{"type":"ping"}`, `{"type":"triple"}`} {
		write(ws, f)
		fmt.Println(read(ws))
	}
	// Output:
	// {"type":"reply","ref":1,"status":"ok","data":{"n":42}}
	// {"type":"reply","ref":2,"status":"error","code":"invalid","text":"n must not be negative"}
	// {"type":"pong"}
	// {"type":"error","code":"unknown_type","text":"unknown frame type \"triple\""}
}

// GroupSendOthers sends to every member of a group but the sender
// (broadcast-from): the sender's own tab does not echo its cursor.
func ExampleConn_GroupSendOthers() {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	dial, stop := serve(layer, consumer.Options{}, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("cursor", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { return c.Send(m.Body) })
			c.HandleFrame("move", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
				m, _ := channellayer.NewMessage("cursor", map[string]int{"x": 3})
				return nil, c.GroupSendOthers(ctx, "doc", m)
			})
			return c.GroupAdd(ctx, "doc")
		}}
	})
	defer stop()
	mover, watcher := dial(""), dial("")
	defer mover.CloseNow()
	defer watcher.CloseNow()
	write(mover, `{"type":"move"}`)
	fmt.Println("watcher:", read(watcher))
	write(mover, `{"type":"ping"}`)
	fmt.Println("mover:", read(mover)) // its pong: no cursor of its own came first
	// Output:
	// watcher: {"type":"cursor","x":3}
	// mover: {"type":"pong"}
}

// GroupAddSince resumes a group from the last message a client saw: it
// returns what the client missed, and the live stream that follows repeats
// none of it.
func ExampleConn_GroupAddSince() {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	var ids []string
	for _, text := range []string{"one", "two", "three"} {
		m, _ := channellayer.NewMessage("post", map[string]string{"text": text})
		rec, _ := layer.GroupSendRecorded(ctx, "feed", m)
		ids = append(ids, rec.ID)
	}
	dial, stop := serve(layer, consumer.Options{}, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("post", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { return c.Send(m.Body) })
			rec, err := c.GroupAddSince(ctx, "feed", c.Scope().Query.Get("since"), 50)
			if err != nil {
				return err
			}
			c.SendJSON(map[string]any{"recovered": rec.Recovered, "missed": len(rec.Messages)})
			for _, m := range rec.Messages {
				c.Send(m.Body)
			}
			return nil
		}}
	})
	defer stop()
	ws := dial("?since=" + ids[0]) // the client had "one"
	defer ws.CloseNow()
	for range 3 {
		fmt.Println(withoutID.ReplaceAllString(read(ws), ""))
	}
	// Output:
	// {"missed":2,"recovered":true}
	// {"type":"post","text":"two"}
	// {"type":"post","text":"three"}
}

// Track puts a connection in a group's presence under a key: two tabs of
// one user are one entry with two metas; the others get presence diffs.
func ExampleConn_Track() {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	opts := consumer.Options{Presence: presence.Options{Interval: 10 * time.Millisecond}}
	dial, stop := serve(layer, opts, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On(presence.DiffType, func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { return c.Send(m.Body) })
			user := c.Scope().Query.Get("user")
			if err := c.Track(ctx, "room", user, map[string]string{"device": c.Scope().Query.Get("device")}); err != nil {
				return err
			}
			who, err := c.Presence(ctx, "room")
			if err != nil {
				return err
			}
			return c.SendJSON(who)
		}}
	})
	defer stop()
	watcher := dial("?user=watcher&device=tv")
	defer watcher.CloseNow()
	fmt.Println(read(watcher))
	phone := dial("?user=ada&device=phone")
	defer phone.CloseNow()
	fmt.Println(read(watcher))
	laptop := dial("?user=ada&device=laptop")
	defer laptop.CloseNow()
	fmt.Println(read(laptop))
	// Output:
	// [{"key":"watcher","metas":[{"device":"tv"}]}]
	// {"type":"presence_diff","group":"room","joins":{"ada":[{"device":"phone"}]},"leaves":{},"count":2}
	// [{"key":"ada","metas":[{"device":"phone"},{"device":"laptop"}]},{"key":"watcher","metas":[{"device":"tv"}]}]
}
