package consumer_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func timeout(t *testing.T) context.Context {
	t.Helper()
	return testkit.ContextWithin(t, 10*time.Second)
}

func connect(t *testing.T, f func() consumer.Consumer, opts consumertest.Options) *consumertest.Communicator {
	t.Helper()
	com := consumertest.New(t, f, opts)
	if err := com.Connect(timeout(t)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return com
}

func expectFrame(t *testing.T, com *consumertest.Communicator, want string) {
	t.Helper()
	got, err := com.Receive(timeout(t))
	if err != nil || string(got) != want {
		t.Fatalf("received %q, %v; want %q", got, err, want)
	}
}

func expectClosed(t *testing.T, com *consumertest.Communicator, want consumer.StatusCode) {
	t.Helper()
	code, err := com.Closed(timeout(t))
	if err != nil || code != want {
		t.Fatalf("closed with %v, %v; want %v", code, err, want)
	}
}

func TestRefuse(t *testing.T) {
	com := consumertest.New(t, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return consumer.Refuse(http.StatusBadRequest, "bad room")
		}}
	}, consumertest.Options{})
	err := com.Connect(timeout(t))
	var refuse *consumer.RefuseError
	if !errors.As(err, &refuse) || refuse.Status != http.StatusBadRequest {
		t.Fatalf("Connect = %v, want a 400 refusal", err)
	}
}

// A group consumer joins "room" and forwards chat events to its client.
func groupConsumer() consumer.Consumer {
	return consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("chat", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				return c.Send(m.Body)
			})
			return c.GroupAdd(ctx, "room")
		},
		OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			m, err := channellayer.NewMessage("chat", map[string]string{"text": string(text)})
			if err != nil {
				return err
			}
			return c.GroupSend(ctx, "room", m)
		},
	}
}

func TestGroupBroadcast(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(context.Background()) })
	a := connect(t, groupConsumer, consumertest.Options{Layer: layer})
	b := connect(t, groupConsumer, consumertest.Options{Layer: layer})
	a.SendText(timeout(t), "hi")
	want := `{"type":"chat","text":"hi"}`
	expectFrame(t, a, want)
	expectFrame(t, b, want)
	if err := b.Disconnect(timeout(t), consumer.StatusNormal); err != nil {
		t.Fatal(err)
	}
	a.SendText(timeout(t), "again")
	expectFrame(t, a, `{"type":"chat","text":"again"}`)
}

func TestCloseCodes(t *testing.T) {
	panicky := func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			switch string(text) {
			case "panic":
				panic("boom")
			case "fail":
				return errors.New("failed")
			case "bye":
				c.Send([]byte("last words"))
				c.Close(consumer.StatusNormal, "bye")
			}
			return nil
		}}
	}
	cases := []struct {
		name  string
		send  func(ctx context.Context, com *consumertest.Communicator)
		first string // a frame expected before the close, if any
		code  consumer.StatusCode
	}{
		{"panic in Receive is 1011", func(ctx context.Context, com *consumertest.Communicator) { com.SendText(ctx, "panic") }, "", consumer.StatusInternalError},
		{"error from Receive is 1011", func(ctx context.Context, com *consumertest.Communicator) { com.SendText(ctx, "fail") }, "", consumer.StatusInternalError},
		{"frame over the read limit is 1009", func(ctx context.Context, com *consumertest.Communicator) {
			com.SendText(ctx, strings.Repeat("x", 1025))
		}, "", consumer.StatusTooBig},
		{"binary frame is 1003", func(ctx context.Context, com *consumertest.Communicator) { com.SendBinary(ctx, []byte{1}) }, "", consumer.StatusUnsupported},
		{"Close flushes, then closes with its code", func(ctx context.Context, com *consumertest.Communicator) { com.SendText(ctx, "bye") }, "last words", consumer.StatusNormal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			com := connect(t, panicky, consumertest.Options{ServerOptions: consumer.Options{ReadLimit: 1024}})
			tc.send(timeout(t), com)
			if tc.first != "" {
				expectFrame(t, com, tc.first)
			}
			expectClosed(t, com, tc.code)
		})
	}
}

func TestDisconnectGetsClientCode(t *testing.T) {
	var got atomic.Int32
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) {
			got.Store(int32(code))
		}}
	}, consumertest.Options{})
	if err := com.Disconnect(timeout(t), 4001); err != nil {
		t.Fatal(err)
	}
	if got.Load() != 4001 {
		t.Fatalf("Disconnect saw %d, want 4001", got.Load())
	}
}

func TestSlowClientIsClosed1013(t *testing.T) {
	// The client buffers 2 frames and never reads; the server queue holds 1 KiB.
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			for i := 0; i < 100; i++ {
				if err := c.Send(make([]byte, 100)); err != nil {
					if !errors.Is(err, consumer.ErrSlow) && !errors.Is(err, consumer.ErrClosed) {
						t.Errorf("Send: %v, want ErrSlow", err)
					}
					return nil
				}
			}
			t.Error("100 sends of 100 bytes into a 1 KiB queue all succeeded")
			return nil
		}}
	}, consumertest.Options{Buffer: 2, ServerOptions: consumer.Options{QueueBytes: 1024}})
	com.SendText(timeout(t), "flood")
	expectClosed(t, com, consumer.StatusTryAgainLater)
}

func TestLayerOverflowIsClosed1013(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{Capacity: 2})
	t.Cleanup(func() { layer.Close(context.Background()) })
	block := make(chan struct{})
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("slow", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				<-block // a handler that cannot keep up
				return nil
			})
			return c.GroupAdd(ctx, "g")
		}}
	}, consumertest.Options{Layer: layer})
	m, _ := channellayer.NewMessage("slow", nil)
	for i := 0; i < 10; i++ {
		if err := layer.GroupSend(timeout(t), "g", m); err != nil {
			t.Fatal(err)
		}
	}
	close(block)
	expectClosed(t, com, consumer.StatusTryAgainLater)
}

func TestDeadPeerIsNoticed(t *testing.T) {
	var code atomic.Int32
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnDisconnect: func(ctx context.Context, c *consumer.Conn, c2 consumer.StatusCode) { code.Store(int32(c2)) }}
	}, consumertest.Options{ServerOptions: consumer.Options{PingInterval: 20 * time.Millisecond, PingTimeout: 50 * time.Millisecond}})
	com.Stall()
	if err := com.Wait(timeout(t)); err != nil {
		t.Fatal(err)
	}
	if code.Load() != int32(consumer.StatusAbnormal) {
		t.Fatalf("Disconnect code %d, want 1006", code.Load())
	}
}

func TestEventsAreSerialized(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(context.Background()) })
	var inside, overlaps atomic.Int32
	enter := func() {
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(time.Millisecond) // stay inside a moment: an overlap would be seen
		inside.Add(-1)
	}
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{
			OnConnect: func(ctx context.Context, c *consumer.Conn) error {
				c.On("e", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error { enter(); return nil })
				return c.GroupAdd(ctx, "g")
			},
			OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error { enter(); return nil },
		}
	}, consumertest.Options{Layer: layer})
	m, _ := channellayer.NewMessage("e", nil)
	for i := 0; i < 20; i++ {
		layer.GroupSend(timeout(t), "g", m)
		com.SendText(timeout(t), "x")
	}
	com.Disconnect(timeout(t), consumer.StatusNormal)
	if overlaps.Load() != 0 {
		t.Fatalf("consumer methods ran concurrently %d times", overlaps.Load())
	}
}

func TestOnClosingSeesTheCode(t *testing.T) {
	codes := make(chan consumer.StatusCode, 4)
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			c.Close(consumer.StatusPolicy, "enough")
			return nil
		}}
	}, consumertest.Options{ServerOptions: consumer.Options{OnClosing: func(code consumer.StatusCode) { codes <- code }}})
	com.SendText(timeout(t), "x")
	expectClosed(t, com, consumer.StatusPolicy)
	select {
	case code := <-codes:
		if code != consumer.StatusPolicy {
			t.Fatalf("OnClosing got %d, want 1008", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnClosing was not called")
	}
}

// A handler may replace the handler of its own type: the next event of
// that type goes to the new one.
func TestOnReplacesHandler(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(context.Background()) })
	var second consumer.EventHandler = func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
		return c.Send([]byte("second"))
	}
	com := connect(t, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("e", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				c.On("e", second)
				return c.Send([]byte("first"))
			})
			return c.GroupAdd(ctx, "g")
		}}
	}, consumertest.Options{Layer: layer})
	m, _ := channellayer.NewMessage("e", nil)
	for i := 0; i < 3; i++ {
		if err := layer.GroupSend(timeout(t), "g", m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"first", "second", "second"} {
		expectFrame(t, com, want)
	}
}

// One pinger serves all connections of a server: connections that leave
// do not stop the others' pings, so each silent peer is still noticed.
func TestPingsGoOnAsConnectionsLeave(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(context.Background()) })
	codes := make(chan consumer.StatusCode, 100)
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, PingInterval: 16 * time.Millisecond, PingTimeout: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	f := func() consumer.Consumer {
		return consumer.Funcs{OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) { codes <- code }}
	}
	const n = 40
	var coms []*consumertest.Communicator
	for i := 0; i < n; i++ {
		coms = append(coms, connect(t, f, consumertest.Options{Server: srv}))
	}
	left, stalled := 0, 0
	for i, com := range coms {
		switch {
		case i%3 == 0:
			com.Disconnect(timeout(t), consumer.StatusNormal)
			left++
		case i%2 == 0:
			com.Stall()
			stalled++
		}
	}
	got := map[consumer.StatusCode]int{}
	for range left + stalled {
		select {
		case code := <-codes:
			got[code]++
		case <-timeout(t).Done():
			t.Fatalf("Disconnect codes so far %v; want %d times 1000 and %d times 1006", got, left, stalled)
		}
	}
	if got[consumer.StatusNormal] != left || got[consumer.StatusAbnormal] != stalled {
		t.Fatalf("Disconnect codes %v; want %d times 1000 and %d times 1006", got, left, stalled)
	}
	if srv.Len() != n-left-stalled {
		t.Fatalf("%d connections open, want %d", srv.Len(), n-left-stalled)
	}
}
