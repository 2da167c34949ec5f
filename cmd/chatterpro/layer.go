package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
)

// channelCapacity is how many events a connection's layer channel holds
// while its dispatcher has not taken them yet. A client that falls behind
// is closed by the byte cap of its outgoing queue (1013), as the wire
// interface says; the channel only bridges the moments its dispatcher
// waits for a core. With the layers' default of 100, a room of 500 at
// 3 000 messages/s on a loaded 2-core machine closed dozens of healthy
// connections (a channel fills in 33 ms); 1024 covers a third of a second
// and costs nothing while the channel is drained.
const channelCapacity = 1024

// layerSettings are the flags that tune the layer, whichever its kind.
type layerSettings struct {
	replicas int           // --redis-replicas: replicas that must have a record before it is acknowledged
	roomTTL  time.Duration // --room-ttl: how long an idle group's history and presence are kept
	history  int           // --history: messages each group keeps (0: the layer's default)
	// connecting is --max-connecting: the joins that may each wait on a
	// Redis call at once (-1: no limit; 0: the default).
	connecting int
}

// openLayer builds the channel layer a --layer URL names.
func openLayer(ctx context.Context, raw string, set layerSettings, log *slog.Logger) (channellayer.Layer, error) {
	shown := redactURL(raw) // errors show this, never the password
	u, err := url.Parse(raw)
	if strings.Contains(raw, "@") && (err != nil || u.User == nil || strings.Contains(u.Host+u.Path+u.RawQuery+u.Fragment, "@")) {
		// The user info did not parse as such: its password may have become
		// a host, path or error text. Never dial it, never show it.
		return nil, errors.New("--layer is not a valid URL: percent-encode special characters such as @ : / ? # in the user name and password")
	}
	if err != nil {
		return nil, fmt.Errorf("--layer: %w", err)
	}
	switch u.Scheme {
	case "memory":
		return channellayer.NewMemory(channellayer.MemoryOptions{Capacity: channelCapacity, GroupTTL: set.roomTTL, HistorySize: set.history})
	case "redis":
		db := 0
		if p := strings.Trim(u.Path, "/"); p != "" {
			if db, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("--layer %q: the path must be a database number", shown)
			}
		}
		if u.Host == "" {
			return nil, fmt.Errorf("--layer %q: give the server as redis://host:port/db", shown)
		}
		o := tuned(set.connecting)
		o.Addrs, o.DB = []string{u.Host}, db
		if u.User != nil {
			o.Username = u.User.Username()
			o.Password, _ = u.User.Password()
		}
		return newRedis(ctx, redis.NewClient(o.Simple()), set, shown, log)
	case "redis-cluster":
		addrs := strings.Split(u.Host, ",")
		if u.Host == "" {
			return nil, fmt.Errorf("--layer %q: give the cluster as redis-cluster://host:port[,host:port...]", shown)
		}
		o := tuned(set.connecting)
		o.Addrs = addrs
		if u.User != nil {
			o.Username = u.User.Username()
			o.Password, _ = u.User.Password()
		}
		if set.replicas > 0 {
			return nil, fmt.Errorf("--redis-replicas works with redis:// and redis-sentinel://, not with a Redis Cluster (--layer %q)", shown)
		}
		return newRedis(ctx, redis.NewClusterClient(o.Cluster()), set, shown, log)
	case "redis-sentinel":
		o := tuned(set.connecting)
		if err := failoverOptions(u, shown, o); err != nil {
			return nil, err
		}
		fo := o.Failover()
		if err := checkSentinels(ctx, fo); err != nil {
			return nil, fmt.Errorf("--layer %q: %w", shown, err)
		}
		return newRedis(ctx, redis.NewFailoverClient(fo), set, shown, log)
	}
	return nil, fmt.Errorf("--layer %q: unknown kind %q (use memory://, redis://host:port/db, redis-sentinel://host:port[,host:port...]/master or redis-cluster://host:port,...)", shown, u.Scheme)
}

// poolSize is the most Redis connections a node may open (per Redis node
// of a cluster): as many as the joins that may run at once, and room for
// the presence tracker's and the publishers' pipelines beside them. It is
// a bound, not a need: a join's presence entry and history read go in the
// shared pipelines, so a storm opens few. With the client's default (10
// per core), joins once queued for connections behind each other and the
// presence work. Connections open only when needed.
func poolSize(connecting int) int {
	if connecting <= 0 {
		connecting = consumer.DefaultMaxConnecting
	}
	return max(10*runtime.GOMAXPROCS(0), connecting+32)
}

// tuned is the settings of a node's Redis client, whatever its kind (see
// UniversalOptions' Simple, Cluster and Failover). Calls fail fast while
// Redis is away instead of queueing up, and the pool fits the joins that
// may wait on it (poolSize).
//
// A call's own deadline bounds its reads and writes
// (ContextTimeoutEnabled): the presence tracker gives its calls 5 s, a
// chat send 2 s. A fixed read timeout shorter than a caller's deadline cut
// slow answers off while Redis was still working on them and sent them
// again: in a reconnect storm on a loaded machine every node's presence
// refresh timed out at 2 s, was retried, and doubled Redis's work just
// when it had least CPU. The read and write timeouts (5 s) bound a call
// without a deadline.
//
// Buffers: go-redis gives each connection 32 KiB to read and 32 KiB to
// write, and each connection of its pipeline pool 128 KiB each way, per
// Redis server. The pool keeps the connections a join storm opened (up to
// poolSize per server): on a three-shard cluster that was about 9 MiB of
// a node's 90 MiB of live heap at 12 500 people, 0.7 KiB a person. A
// node's commands are small and most replies a few KiB; a longer one (a
// history page, a big group's presence) takes a few more reads. A message
// longer than the buffer is read whole however slowly it comes: the
// pub/sub reads wait 30 s (in the layer; a 1 s read deadline once cut
// such a message in the middle, which was first blamed on these buffers).
func tuned(connecting int) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, PoolTimeout: 2 * time.Second,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		PoolSize:              poolSize(connecting),
		ReadBufferSize:        redisBuffer, WriteBufferSize: redisBuffer,
		PipelineReadBufferSize: redisPipelineBuffer, PipelineWriteBufferSize: redisPipelineBuffer,
	}
}

// Buffer sizes of a node's Redis connections (see tuned).
const (
	redisBuffer         = 8 << 10
	redisPipelineBuffer = 32 << 10
)

// newRedis opens the Redis layer on c. A Redis that refuses the settings
// (see settingError: a wrong password or database number, a plain Redis
// named as a cluster) stops the node. A Redis that cannot be used yet (not
// reachable, or answering LOADING, BUSY and the like) is an outage, which
// never stops a node: it serves without Redis, not ready (/readyz 503,
// joins refused with 503), and connects by itself once Redis is back.
func newRedis(ctx context.Context, c redis.UniversalClient, set layerSettings, shown string, log *slog.Logger) (channellayer.Layer, error) {
	opts := channellayer.RedisOptions{Logger: log, Capacity: channelCapacity, Replicas: set.replicas, GroupTTL: set.roomTTL, HistorySize: set.history}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := c.Ping(pctx).Err()
	cancel()
	if settingError(err) {
		_ = c.Close()
		return nil, fmt.Errorf("--layer %q: Redis refused the connection: %v (check the database number, user and password, and whether it is one Redis, redis://, or a cluster, redis-cluster://)", shown, err)
	}
	if err == nil {
		// Redis answers: wait (a little) for the layer's subscription, so
		// that the node is ready when it starts serving.
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		l, werr := channellayer.NewRedis(wctx, c, opts)
		cancel()
		if werr == nil {
			return &ownedClient{Redis: l, client: c}, nil
		}
		err = werr
	}
	// An outage, now or since the PING (Redis gone again, a shard failing
	// over): serve without Redis, not ready until the layer connects.
	log.Warn("Redis cannot be used yet: serving without it, not ready until it can be", "layer", shown, "err", err)
	opts.NoWait = true
	l, err := channellayer.NewRedis(ctx, c, opts)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("--layer %q: opening the Redis layer: %w", shown, err)
	}
	return &ownedClient{Redis: l, client: c}, nil
}

// settingError reports whether err, Redis's answer to the first PING, means
// the --layer URL is wrong rather than Redis busy for now (LOADING after a
// restart, BUSY, MASTERDOWN, CLUSTERDOWN, max clients: an outage).
func settingError(err error) bool {
	if redis.IsAuthError(err) || redis.IsPermissionError(err) { // NOAUTH, WRONGPASS, NOPERM
		return true
	}
	for _, p := range []string{
		"DB index is out of range", "invalid DB index", "SELECT is not allowed in cluster mode",
		"This instance has cluster support disabled", "invalid password", "Client sent AUTH, but no password is set",
	} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// ownedClient closes the Redis client with the layer.
type ownedClient struct {
	*channellayer.Redis
	client redis.UniversalClient
}

func (o *ownedClient) Close(ctx context.Context) error {
	err := o.Redis.Close(ctx)
	_ = o.client.Close()
	return err
}
