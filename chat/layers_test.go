package chat

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// eachLayer runs f on two nodes of one deployment, on each backend: the
// memory layer (one layer shared by both apps) and Redis (a layer of its
// own per node on one redis-server, as two processes have). mod, if not
// nil, changes both nodes' Config.
func eachLayer(t *testing.T, mod func(*Config), f func(t *testing.T, n1, n2 *testNode)) {
	t.Run("memory", func(t *testing.T) {
		mem, err := channellayer.NewMemory(channellayer.MemoryOptions{HistorySize: 200})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Close(context.Background()) })
		f(t, newNode(t, mem, mod), newNode(t, mem, mod))
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		prefix := "chat-" + t.Name()
		f(t, newNode(t, redisLayer(t, srv.Addr(), prefix), mod), newNode(t, redisLayer(t, srv.Addr(), prefix), mod))
	})
}

// redisLayer opens a Redis layer (history of 200) that the test closes.
func redisLayer(t *testing.T, addr, prefix string) *channellayer.Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := channellayer.NewRedis(ctx, c, channellayer.RedisOptions{Prefix: prefix, HistorySize: 200, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Close(ctx)
		c.Close()
	})
	return l
}
