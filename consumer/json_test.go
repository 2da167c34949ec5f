package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
)

// adder is a JSON consumer with one frame type: {"type":"add","a":1,"b":2}.
func adder(rate float64) func() consumer.Consumer {
	return func() consumer.Consumer {
		return &consumer.JSON{
			Rate: rate,
			OnConnect: func(ctx context.Context, c *consumer.Conn) error {
				c.HandleFrame("add", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
					var in struct{ A, B *int }
					if err := f.Decode(&in); err != nil {
						return nil, err
					}
					if in.A == nil || in.B == nil {
						return nil, consumer.Reject(consumer.CodeInvalid, "add needs a and b")
					}
					return map[string]int{"sum": *in.A + *in.B}, nil
				})
				c.HandleFrame("fail", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
					return nil, errors.New("a bug")
				})
				return nil
			},
		}
	}
}

func connectJSON(t *testing.T, f func() consumer.Consumer, opts consumertest.Options) *consumertest.Communicator {
	t.Helper()
	com := consumertest.New(t, f, opts)
	if err := com.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return com
}

func TestJSONConvention(t *testing.T) {
	ctx := context.Background()
	com := connectJSON(t, adder(0), consumertest.Options{})
	tests := []struct {
		name, send, want string
	}{
		{"ping", `{"type":"ping"}`, `{"type":"pong"}`},
		{"ping with ref", `{"type":"ping","ref":7}`, `{"type":"pong","ref":7}`},
		{"reply ok", `{"type":"add","ref":"r1","a":1,"b":2}`, `{"type":"reply","ref":"r1","status":"ok","data":{"sum":3}}`},
		{"refused with ref", `{"type":"add","ref":2,"a":1}`, `{"type":"reply","ref":2,"status":"error","code":"invalid","text":"add needs a and b"}`},
		{"refused without ref", `{"type":"add","a":1}`, `{"type":"error","code":"invalid","text":"add needs a and b"}`},
		{"unknown type with ref", `{"type":"nope","ref":"x"}`, `{"type":"reply","ref":"x","status":"error","code":"unknown_type","text":"unknown frame type \"nope\""}`},
		{"bad json", `not json`, `{"type":"error","code":"bad_json","text":"send a JSON object with a string \"type\", like {\"type\":\"ping\"}"}`},
		{"no type, with ref", `{"ref":3}`, `{"type":"reply","ref":3,"status":"error","code":"bad_json","text":"send a JSON object with a string \"type\", like {\"type\":\"ping\"}"}`},
		{"wrong shape", `{"type":"add","ref":4,"a":"x","b":1}`, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := com.SendText(ctx, tt.send); err != nil {
				t.Fatal(err)
			}
			got, err := com.Receive(ctx)
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if tt.want == "" { // only the shape is fixed
				var r struct{ Type, Status, Code string }
				if json.Unmarshal(got, &r); r.Type != "reply" || r.Status != "error" || r.Code != "bad_json" {
					t.Fatalf("got %s, want a bad_json error reply", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	// A frame with a ref gets exactly one reply: nothing follows.
	if quiet, extra := com.ReceiveNothing(100 * time.Millisecond); !quiet {
		t.Fatalf("an extra frame arrived: %s", extra)
	}
}

func TestJSONErrorBudget(t *testing.T) {
	ctx := context.Background()
	com := connectJSON(t, adder(0), consumertest.Options{})
	for i := 0; i < consumer.ErrorBudget+1; i++ {
		// Error replies count like error frames.
		frame := `{"type":"nope"}`
		if i%2 == 0 {
			frame = `{"type":"nope","ref":1}`
		}
		com.SendText(ctx, frame)
	}
	for i := 0; ; i++ {
		_, err := com.Receive(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != consumer.StatusPolicy {
				t.Fatalf("closed with %v (%d), want 1008", err, code)
			}
			if i != consumer.ErrorBudget+1 {
				t.Fatalf("closed after %d error frames, want %d", i, consumer.ErrorBudget+1)
			}
			return
		}
	}
}

func TestJSONBudgetCountsOnlyErrors(t *testing.T) {
	ctx := context.Background()
	com := connectJSON(t, adder(0), consumertest.Options{})
	for i := 0; i < 3*consumer.ErrorBudget; i++ {
		com.SendText(ctx, `{"type":"add","ref":1,"a":1,"b":1}`)
		if _, err := com.Receive(ctx); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
}

func TestJSONRateLimit(t *testing.T) {
	ctx := context.Background()
	com := connectJSON(t, adder(1), consumertest.Options{}) // burst 2
	codes := make([]string, 0, 3)
	for range 3 {
		com.SendText(ctx, `{"type":"add","ref":1,"a":1,"b":1}`)
		var r struct{ Status, Code string }
		if err := com.ReceiveJSON(ctx, &r); err != nil {
			t.Fatal(err)
		}
		codes = append(codes, r.Status+":"+r.Code)
	}
	if strings.Join(codes, ",") != "ok:,ok:,error:rate_limited" {
		t.Fatalf("replies %v, want two ok then rate_limited", codes)
	}
}

func TestJSONHandlerErrorCloses1011(t *testing.T) {
	ctx := context.Background()
	com := connectJSON(t, adder(0), consumertest.Options{})
	com.SendText(ctx, `{"type":"fail","ref":1}`)
	_, err := com.Receive(ctx)
	if code := websocket.CloseStatus(err); code != consumer.StatusInternalError {
		t.Fatalf("Receive = %v, want a 1011 close", err)
	}
}

// TestGroupSendOthers: broadcast-from reaches every member but the sender.
func TestGroupSendOthers(t *testing.T) {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(ctx) })
	newCons := func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("said", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { return c.Send(m.Body) })
			c.HandleFrame("say", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
				m, err := channellayer.NewMessage("said", map[string]string{"by": c.Channel()})
				if err != nil {
					return nil, err
				}
				return nil, c.GroupSendOthers(ctx, "room", m)
			})
			return c.GroupAdd(ctx, "room")
		}}
	}
	coms := []*consumertest.Communicator{
		connectJSON(t, newCons, consumertest.Options{Layer: layer}),
		connectJSON(t, newCons, consumertest.Options{Layer: layer}),
		connectJSON(t, newCons, consumertest.Options{Layer: layer}),
	}
	coms[0].SendText(ctx, `{"type":"say","ref":1}`)
	var r struct{ Type, Status string }
	if err := coms[0].ReceiveJSON(ctx, &r); err != nil || r.Type != "reply" || r.Status != "ok" {
		t.Fatalf("sender got %+v, %v; want its ok reply", r, err)
	}
	for i, com := range coms[1:] {
		var ev struct{ Type string }
		if err := com.ReceiveJSON(ctx, &ev); err != nil || ev.Type != "said" {
			t.Fatalf("member %d got %+v, %v", i+1, ev, err)
		}
	}
	if quiet, extra := coms[0].ReceiveNothing(100 * time.Millisecond); !quiet {
		t.Fatalf("the sender got its own event: %s", extra)
	}
}

// TestGroupAddSince: a consumer resumes from an ID; a repeat of the
// recovered messages never reaches its handler.
func TestGroupAddSince(t *testing.T) {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(ctx) })
	var ids []string
	for i := range 3 {
		m, _ := channellayer.NewMessage("post", map[string]int{"n": i})
		rec, err := layer.GroupSendRecorded(ctx, "feed", m)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	var repeat channellayer.Message
	com := connectJSON(t, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("post", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { return c.Send(m.Body) })
			rec, err := c.GroupAddSince(ctx, "feed", ids[0], 10)
			if err != nil {
				return err
			}
			if !rec.Recovered || len(rec.Messages) != 2 {
				return errors.New("not recovered")
			}
			repeat = rec.Messages[1]
			for _, m := range rec.Messages {
				c.Send(m.Body)
			}
			return nil
		}}
	}, consumertest.Options{Layer: layer})
	for _, want := range ids[1:] {
		var m struct{ ID string }
		if err := com.ReceiveJSON(ctx, &m); err != nil || m.ID != want {
			t.Fatalf("got %q, %v; want %s", m.ID, err, want)
		}
	}
	// The layer delivers a copy of a recovered message (as a message
	// recorded between the join and the history read would arrive), then
	// a new one: only the new one reaches the client.
	repeat.Group = ""
	if err := layer.GroupSend(ctx, "feed", repeat); err != nil {
		t.Fatal(err)
	}
	m, _ := channellayer.NewMessage("post", map[string]int{"n": 3})
	fresh, err := layer.GroupSendRecorded(ctx, "feed", m)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ ID string }
	if err := com.ReceiveJSON(ctx, &got); err != nil || got.ID != fresh.ID {
		t.Fatalf("got %q, %v; want the new message %s (and not the repeat %s)", got.ID, err, fresh.ID, repeat.ID)
	}
}

// TestDo: a goroutine runs code in the consumer's order; after the close
// Do refuses.
func TestDo(t *testing.T) {
	ctx := context.Background()
	conns := make(chan *consumer.Conn, 1)
	var mu sync.Mutex // only to hand the count to the test
	inside, most := 0, 0
	enter := func() {
		mu.Lock()
		inside++
		most = max(most, inside)
		mu.Unlock()
	}
	leave := func() { mu.Lock(); inside--; mu.Unlock() }
	com := connectJSON(t, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.HandleFrame("work", func(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
				enter()
				defer leave()
				return nil, nil
			})
			conns <- c
			return nil
		}}
	}, consumertest.Options{})
	c := <-conns
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := c.Do(func(ctx context.Context, c *consumer.Conn) error {
					enter()
					defer leave()
					return c.Send([]byte(`{"type":"tick"}`))
				}); err != nil {
					t.Errorf("Do: %v", err)
					return
				}
			}
		}()
	}
	for range 100 {
		com.SendText(ctx, `{"type":"work","ref":1}`)
	}
	wg.Wait()
	for range 300 { // 200 ticks, 100 replies
		if _, err := com.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Fatalf("%d calls ran at once in the consumer, want 1", most)
	}
	com.Disconnect(ctx, consumer.StatusNormal)
	if err := c.Do(func(context.Context, *consumer.Conn) error { return nil }); !errors.Is(err, consumer.ErrClosed) {
		t.Fatalf("Do after close = %v, want ErrClosed", err)
	}
}

// TestUnhandledEventCounted: an event nobody registered is counted, not
// dropped silently.
func TestUnhandledEventCounted(t *testing.T) {
	ctx := context.Background()
	types := make(chan string, 4)
	com := connectJSON(t, func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error { return c.GroupAdd(ctx, "g") }}
	}, consumertest.Options{ServerOptions: consumer.Options{OnUnhandled: func(typ string) { types <- typ }}})
	_ = com
	layer := com.Layer()
	m, _ := channellayer.NewMessage("typo.event", nil)
	if err := layer.GroupSend(ctx, "g", m); err != nil {
		t.Fatal(err)
	}
	select {
	case typ := <-types:
		if typ != "typo.event" {
			t.Fatalf("OnUnhandled(%q), want typo.event", typ)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnUnhandled was not called within 5 s")
	}
}
