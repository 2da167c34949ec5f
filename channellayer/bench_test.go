package channellayer_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// BenchmarkGroupSend sends to a group whose members are all local, and
// drains every member: one op is one group send and its deliveries. The
// allocations of an op must not grow with the number of members.
func BenchmarkGroupSend(b *testing.B) {
	backends := []struct {
		name string
		new  func(b *testing.B) channellayer.Layer
	}{
		{"memory", func(b *testing.B) channellayer.Layer {
			l, err := channellayer.NewMemory(channellayer.MemoryOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = l.Close(context.Background()) })
			return l
		}},
		{"redis", func(b *testing.B) channellayer.Layer {
			srv := redistest.Start(b)
			return newRedisLayer(b, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
		}},
	}
	for _, be := range backends {
		for _, members := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/members=%d", be.name, members), func(b *testing.B) {
				benchGroupSend(b, be.new(b), members)
			})
		}
	}
}

func benchGroupSend(b *testing.B, l channellayer.Layer, members int) {
	ctx := context.Background()
	const group = "bench"
	chans := make([]string, members)
	for i := range chans {
		chans[i] = newChan(b, l, group)
	}
	msg := mustMsg(b, "chat", map[string]string{"text": "hello, world"})
	// Send in batches smaller than a channel's capacity, then drain them.
	const batch = 50
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		k := min(batch, b.N-sent)
		for range k {
			if err := l.GroupSend(ctx, group, msg); err != nil {
				b.Fatal(err)
			}
		}
		for _, ch := range chans {
			for range k {
				if _, err := l.Receive(ctx, ch); err != nil {
					b.Fatal(err)
				}
			}
		}
		sent += k
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(members), "ns/delivery")
}

// BenchmarkRedisPublishParallel: many goroutines group-send at once, as
// the readers of a busy node do. "layer" is the layer's publish path
// (concurrent publishes share pipelined round trips); "client" is one
// go-redis PUBLISH per message, as a layer without pipelining sends them.
// One op is one message published; compare the two in one run.
func BenchmarkRedisPublishParallel(b *testing.B) {
	srv := redistest.Start(b)
	payload := mustMsg(b, "chat", map[string]string{"text": "hello, world"})
	b.Run("layer", func(b *testing.B) {
		l := newRedisLayer(b, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
		publishParallel(b, func(ctx context.Context) error { return l.GroupSend(ctx, "bench", payload) })
	})
	b.Run("client", func(b *testing.B) {
		c := newClient(b, srv.Addr())
		publishParallel(b, func(ctx context.Context) error { return c.Publish(ctx, "bench", payload.Body).Err() })
	})
}

// publishParallel runs publish from 16 goroutines per CPU, b.N times in all.
func publishParallel(b *testing.B, publish func(ctx context.Context) error) {
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := publish(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRecordedAsync records one message at a time with
// GroupSendRecordedAsync to a group of one local member, as a node of
// many quiet rooms does (each record alone in its round trip), and waits
// for both its result and its delivery. Its allocations per op are what a
// message costs the collector on the record path.
func BenchmarkRecordedAsync(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		l, err := channellayer.NewMemory(channellayer.MemoryOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close(context.Background()) })
		benchRecordedAsync(b, l)
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		benchRecordedAsync(b, newRedisLayer(b, srv.Addr(), newPrefix(), channellayer.RedisOptions{}))
	})
}

func benchRecordedAsync(b *testing.B, l channellayer.Layer) {
	ctx := context.Background()
	const group = "bench"
	ch := newChan(b, l, group)
	msg := mustMsg(b, "chat", map[string]string{"text": "hello, world", "user": "somebody"})
	rec := l.(channellayer.Recorder)
	results := make(chan error, 1)
	done := func(_ channellayer.Message, err error) { results <- err }
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rec.GroupSendRecordedAsync(group, msg, done)
		if err := <-results; err != nil {
			b.Fatal(err)
		}
		if _, err := l.Receive(ctx, ch); err != nil {
			b.Fatal(err)
		}
	}
}
