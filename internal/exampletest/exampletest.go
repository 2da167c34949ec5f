// Package exampletest runs the apps of examples/ as several nodes in a
// test: on one memory layer (one process) and on a real redis-server
// (nodes share nothing but Redis), with the app served through
// consumertest (no network for the websockets).
package exampletest

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// Node is one server of an app.
type Node struct {
	Layer   channellayer.Layer
	Server  *consumer.Server
	Handler *consumertest.Handler
	HTTP    http.Handler
}

// Backends runs f once per backend ("memory", "redis") with a function that
// starts a node of the app made by newApp; nodes of one run share the
// backend's store.
func Backends(t *testing.T, opts consumer.Options, newApp func(srv *consumer.Server, layer channellayer.Layer) (http.Handler, error), f func(t *testing.T, node func() *Node)) {
	t.Run("memory", func(t *testing.T) {
		mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mem.Close(context.Background()) })
		f(t, func() *Node { return start(t, mem, opts, newApp) })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		f(t, func() *Node {
			client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = client.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			l, err := channellayer.NewRedis(ctx, client, channellayer.RedisOptions{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close(context.Background()) })
			return start(t, l, opts, newApp)
		})
	})
}

func start(t *testing.T, layer channellayer.Layer, opts consumer.Options, newApp func(*consumer.Server, channellayer.Layer) (http.Handler, error)) *Node {
	t.Helper()
	opts.Layer = layer
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := consumer.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newApp(srv, layer)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the server's connections end before
	// the layer under them closes.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &Node{Layer: layer, Server: srv, Handler: consumertest.Serve(t, h), HTTP: h}
}

// Context returns a context bounded by d, cancelled when the test ends.
func Context(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
