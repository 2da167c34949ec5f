package consumer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// A connection that gets messages all the time is pinged once an
// interval, as an idle one is, and no more. (Pings that rode on the
// writes of messages, tried and taken out again, once sent about twice as
// many: 27 in 4 s at 250 ms; BENCHMARKS.md, runs 96 to 103.)
func TestBusyConnectionPingedOnceAnInterval(t *testing.T) {
	const interval = 250 * time.Millisecond
	s := serveSockets(t, consumer.Options{PingInterval: interval, PingTimeout: interval * 3 / 5}, func() consumer.Consumer {
		return consumer.Funcs{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			go func() { // a message every 30 ms while the connection lives
				tick := time.NewTicker(30 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
						_ = c.Send([]byte(`{"type":"tick"}`))
					}
				}
			}()
			return nil
		}}
	})
	ctx := testkit.ContextWithin(t, 30*time.Second)
	var pings atomic.Int64
	ws, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	start := time.Now()
	msgs := 0
	for time.Since(start) < 4*time.Second {
		if _, _, err := ws.Read(ctx); err != nil {
			t.Fatalf("after %d messages: %v (a connection that answers its pings was closed?)", msgs, err)
		}
		msgs++
	}
	took := time.Since(start)
	rounds := int64(took / interval)
	if n := pings.Load(); n > rounds+2 || n < 3 {
		t.Errorf("%d pings in %v with %d messages, want at most one an interval (%d) and some", n, took.Round(time.Millisecond), msgs, rounds)
	}
}
