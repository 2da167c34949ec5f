package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The replicas scenario measures what --redis-replicas costs: the rooms
// load (every member sending once a second) on one node whose Redis is a
// primary with one replica, run with --redis-replicas 0 and again with
// --redis-replicas 1, each on fresh processes. With 1, a round trip that
// records ends with a WAIT for the replica, and the records are published
// only after it: both the delivery to the other members and the sender's
// acknowledgement (its own copy coming back) wait for it. The scenario
// reports the two latencies apart, and the primary's count of WAIT calls
// as proof of which mode ran.
const (
	scenarioReplicas = "replicas"
	// One node on a Redis primary with one replica, --redis-replicas 0
	// and 1.
	targetOursReplicas0 = "chatterpro-replicas-0"
	targetOursReplicas1 = "chatterpro-replicas-1"
)

// replicaLinkTimeout bounds the wait for the replica to be in sync.
const replicaLinkTimeout = 20 * time.Second

// startReplicated starts a Redis primary, one replica of it, and one chat
// node on the primary with --redis-replicas n.
func startReplicated(ctx context.Context, cfg *config, dir string, n int, name string) (*target, error) {
	bin, err := serverBinary(cfg, dir)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, layer: "redis"}
	primary, paddr, err := startRedis(cfg, dir, "redis-primary")
	if err != nil {
		return nil, err
	}
	t.aux = append(t.aux, primary)
	_, pport, _ := strings.Cut(paddr, ":")
	replica, raddr, err := startRedis(cfg, dir, "redis-replica", "--replicaof", "127.0.0.1", pport)
	if err != nil {
		t.stop()
		return nil, err
	}
	t.aux = append(t.aux, replica)
	if err := waitReplicaInSync(ctx, paddr, raddr); err != nil {
		t.stop()
		return nil, err
	}
	t.primary, t.replicas = paddr, n
	if err := t.startNode(ctx, dir, bin, "chatterpro1", "redis://"+paddr+"/0", "--redis-replicas", strconv.Itoa(n)); err != nil {
		t.stop()
		return nil, err
	}
	time.Sleep(startupSleep)
	return t, nil
}

// redisInfo returns the fields of one section of a redis-server's INFO.
func redisInfo(ctx context.Context, addr, section string) (map[string]string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// waitReplicaInSync polls until the replica's link to the primary is up
// and the primary counts it as an online replica.
func waitReplicaInSync(ctx context.Context, primary, replica string) error {
	deadline := time.Now().Add(replicaLinkTimeout)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r, rerr := redisInfo(ctx, replica, "replication")
		p, perr := redisInfo(ctx, primary, "replication")
		switch {
		case rerr != nil || perr != nil:
			last = fmt.Sprintf("INFO: %v %v", rerr, perr)
		case r["master_link_status"] != "up":
			last = "replica link " + r["master_link_status"]
		case p["connected_slaves"] != "1" || !strings.Contains(p["slave0"], "state=online"):
			last = fmt.Sprintf("primary: %s replicas, %q", p["connected_slaves"], p["slave0"])
		default:
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("the replica %s not in sync with %s after %s: %s", replica, primary, replicaLinkTimeout, last)
}

// waitCalls returns how many WAIT commands the Redis at addr has run.
func waitCalls(ctx context.Context, addr string) (float64, error) {
	info, err := redisInfo(ctx, addr, "commandstats")
	if err != nil {
		return 0, err
	}
	stats, ok := info["cmdstat_wait"]
	if !ok {
		return 0, nil // never called
	}
	for _, f := range strings.Split(stats, ",") {
		if v, ok := strings.CutPrefix(f, "calls="); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no calls in %q", stats)
}

// replicaParams completes a result of the replicas scenario: the node's
// --redis-replicas, and how many WAIT commands the primary ran (none with
// 0; with 1, at most one per round trip that recorded).
func replicaParams(ctx context.Context, t *target, res *result) error {
	res.Params["redis"] = "a primary and one replica"
	res.Params["redis_replicas"] = t.replicas
	calls, err := waitCalls(ctx, t.primary)
	if err != nil {
		return fmt.Errorf("counting WAIT calls: %w", err)
	}
	res.Metrics["redis_wait_calls"] = calls
	return nil
}
