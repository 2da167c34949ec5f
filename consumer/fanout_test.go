package consumer_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// The fan-out path end to end: a group send on the layer, the arrival
// callback of every member, its dispatcher, the consumer's handler, the
// outgoing queue and the write to a real socket. The clients read with a
// fixed buffer and allocate nothing, so what the process allocates is the
// server's.

// fanout is a group of members, each a real loopback websocket whose
// consumer forwards "msg" layer events as text frames.
type fanout struct {
	tb      testing.TB
	layer   channellayer.Layer
	members int
	msg     channellayer.Message
	frame   int64 // bytes of one frame on the wire

	read    atomic.Int64 // bytes the clients have read
	want    atomic.Int64 // bytes the clients must read before reached fires
	reached chan struct{}
}

const fanoutGroup = "room"

func newFanout(tb testing.TB, members int, opts consumer.Options) *fanout {
	tb.Helper()
	body := []byte(`{"type":"message","id":"1-0","user":"bench","text":"hello, world","time":"2026-01-01T00:00:00Z"}`)
	f := &fanout{tb: tb, members: members, msg: channellayer.Message{Type: "msg", Body: body},
		frame: int64(2 + len(body)), reached: make(chan struct{}, 1)}
	var joined atomic.Int64
	cons := consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("msg", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				return c.Send(m.Body)
			})
			if err := c.GroupAdd(ctx, fanoutGroup); err != nil {
				return err
			}
			joined.Add(1)
			return nil
		},
	}
	opts.PingInterval = -1
	s := serveSockets(tb, opts, func() consumer.Consumer { return cons })
	f.layer = s.layer
	var readers sync.WaitGroup
	var conns []net.Conn
	tb.Cleanup(func() { // before the server's: the clients go first
		for _, nc := range conns {
			nc.Close()
		}
		readers.Wait()
	})
	for range members {
		nc, br := rawHandshake(tb, s.hs.Listener.Addr().String(), nil)
		conns = append(conns, nc)
		readers.Add(1)
		go func() {
			defer readers.Done()
			f.count(br)
		}()
	}
	testkit.EventuallyNil(tb, 20*time.Second, func() error {
		if n := joined.Load(); n < int64(members) {
			return fmt.Errorf("%d of %d members joined", n, members)
		}
		return nil
	}, "members joining")
	return f
}

// count adds what a client reads to f.read until its socket is closed.
func (f *fanout) count(br *bufio.Reader) {
	var buf [64 << 10]byte
	for {
		n, err := br.Read(buf[:])
		if n > 0 {
			if w := f.want.Load(); f.read.Add(int64(n)) >= w && w > 0 {
				select {
				case f.reached <- struct{}{}:
				default:
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// send group-sends k messages and waits until every member has read them.
func (f *fanout) send(k int) {
	ctx := context.Background()
	want := f.read.Load() + int64(k)*int64(f.members)*f.frame
	f.want.Store(want)
	for range k {
		if err := f.layer.GroupSend(ctx, fanoutGroup, f.msg); err != nil {
			f.tb.Fatal(err)
		}
	}
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for f.read.Load() < want {
		select {
		case <-f.reached:
		case <-deadline.C:
			f.tb.Fatalf("members read %d of %d bytes", f.read.Load(), want)
		}
	}
}

// fanoutBatch is how many messages are sent before waiting for the
// members: fewer than a layer channel holds (100).
const fanoutBatch = 16

// BenchmarkFanout: one op is one group send and its delivery to every
// member's socket. allocs/op must not grow with the members. (The time per
// op mostly measures pacing: a batch of messages to one connection is
// written at most once per Options.Coalesce.)
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			f := newFanout(b, members, consumer.Options{})
			f.send(fanoutBatch) // warm up pools and queues
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += fanoutBatch {
				f.send(min(fanoutBatch, b.N-sent))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(members), "ns/delivery")
		})
	}
}
