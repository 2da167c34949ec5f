package consumer_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
)

// Frames queued in bursts reach the client whole and in order, whatever
// their sizes, while the client pings (the pongs are written by another
// goroutine than the batches).
func TestSocketFramesInOrder(t *testing.T) {
	frame := func(i int) []byte {
		size := []int{1, 125, 126, 4000, 5000, 65535, 65536, 70000}[i%8]
		b := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
		copy(b, fmt.Sprintf("%d:", i))
		return b
	}
	const n = 400
	url := serveSockets(t, consumer.Options{QueueBytes: 64 << 20}, func() consumer.Consumer {
		return consumer.Funcs{OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
			for i := 0; i < n; i++ {
				if err := c.Send(frame(i)); err != nil {
					return err
				}
			}
			return nil
		}}
	}).url
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	if err := ws.Write(ctx, websocket.MessageText, []byte("go")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for i := 0; i < n; i++ {
			_, b, err := ws.Read(ctx)
			if err != nil {
				got <- fmt.Errorf("frame %d: %v", i, err)
				return
			}
			if !bytes.Equal(b, frame(i)) {
				got <- fmt.Errorf("frame %d: got %d bytes starting %q, want %d starting %q", i, len(b), b[:min(8, len(b))], len(frame(i)), frame(i)[:min(8, len(frame(i)))])
				return
			}
		}
		got <- nil
		for { // pongs arrive only while someone reads
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := ws.Ping(pctx)
		pcancel()
		if err != nil {
			t.Errorf("ping %d: %v", i, err)
			break
		}
	}
	if err := <-got; err != nil {
		t.Error(err)
	}
	ws.CloseNow()
	<-readerDone
}

// A client that stops reading cannot hold a writer forever: once the
// socket's buffers are full, the write is cut after the write timeout and
// the connection ends as lost (1006).
func TestSocketStalledReaderIsCut(t *testing.T) {
	codes := make(chan consumer.StatusCode, 1)
	url := serveSockets(t, consumer.Options{
		WriteTimeout: 200 * time.Millisecond,
		PingInterval: -1,      // only the write timeout may notice
		QueueBytes:   1 << 30, // and not the queue limit
	}, func() consumer.Consumer {
		return consumer.Funcs{
			OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error {
				go func() { // far more than loopback buffers hold
					big := make([]byte, 1<<20)
					for i := 0; i < 256; i++ {
						if c.Send(big) != nil {
							return
						}
						time.Sleep(time.Millisecond) // a steady producer, faster than the stalled reader
					}
				}()
				return nil
			},
			OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) { codes <- code },
		}
	}).url
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("flood")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-codes:
		if code != consumer.StatusAbnormal {
			t.Fatalf("closed with %d, want 1006", code)
		}
	case <-ctx.Done():
		t.Fatal("the writer to a client that stopped reading was never cut")
	}
}
