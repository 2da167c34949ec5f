// Command centrifuge is chatbench's centrifuge anchor: a chat server built
// on the centrifuge library (github.com/centrifugal/centrifuge), set up as
// its fastest multi-node path: anonymous clients, one channel per room,
// clients publish through the server, and the Redis broker without
// history. Every node started on the same Redis serves the same rooms.
//
// It is a module of its own so that ChatterPro's go.mod does not grow;
// chatbench builds it when a scenario needs it.
//
//	centrifuge -addr 127.0.0.1:8000 -redis 127.0.0.1:6379
//
// Clients speak centrifuge's JSON protocol over the websocket at
// /connection/websocket: a connect command, a subscribe to the room's
// channel, then publish commands; every subscriber of the channel receives
// each publication as a push. GET /healthz answers 200 once the node runs.
// Without -redis the node uses centrifuge's in-memory broker (one node
// only).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen address")
	redis := flag.String("redis", "", "Redis address (host:port) of the broker; empty: in-memory broker")
	flag.Parse()
	if err := serve(*addr, *redis); err != nil {
		fmt.Fprintln(os.Stderr, "centrifuge anchor:", err)
		os.Exit(1)
	}
}

// newNode returns a running centrifuge node on the Redis broker at redis
// (or the in-memory broker when redis is empty) that lets anonymous
// clients subscribe to any channel and publish into it.
func newNode(redis string) (*centrifuge.Node, error) {
	node, err := centrifuge.New(centrifuge.Config{
		LogLevel: centrifuge.LogLevelError,
		LogHandler: func(e centrifuge.LogEntry) {
			slog.Error(e.Message, "fields", e.Fields)
		},
	})
	if err != nil {
		return nil, err
	}
	if redis != "" {
		shard, err := centrifuge.NewRedisShard(node, centrifuge.RedisShardConfig{Address: redis})
		if err != nil {
			return nil, fmt.Errorf("redis shard: %w", err)
		}
		broker, err := centrifuge.NewRedisBroker(node, centrifuge.RedisBrokerConfig{Shards: []*centrifuge.RedisShard{shard}})
		if err != nil {
			return nil, fmt.Errorf("redis broker: %w", err)
		}
		// The broker is also the controller: nodes find each other
		// through it.
		node.SetBroker(broker)
	}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		// Anonymous: an empty user ID.
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(_ centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			cb(centrifuge.SubscribeReply{}, nil)
		})
		// An empty reply lets the library publish the data to the
		// channel, without history and without client info.
		c.OnPublish(func(_ centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			cb(centrifuge.PublishReply{}, nil)
		})
	})
	if err := node.Run(); err != nil {
		return nil, err
	}
	return node, nil
}

// serve runs the node and its HTTP server on addr until SIGTERM or SIGINT.
func serve(addr, redis string) error {
	node, err := newNode(redis)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
