package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/internal/harness"
)

// Layer kinds of the cluster scenario.
const (
	layerRedis        = "redis"
	layerRedisCluster = "redis-cluster"
	clusterMasters    = 3
)

// redisLayer is the Redis the cluster scenario's nodes share: one
// redis-server, or a Redis Cluster of three masters without replicas.
type redisLayer struct {
	kind  string
	procs []*proc
	addrs []string
	url   string // the nodes' --layer
	cli   redis.UniversalClient
	nice  int // the nice value the redis-servers run at
}

// startRedisLayer starts the layer on free loopback ports, each
// redis-server at nice (see clusterConfig.redisNice; 0 leaves it).
func startRedisLayer(ctx context.Context, cfg *config, dir, kind string, nice int) (*redisLayer, error) {
	l := &redisLayer{kind: kind}
	n := 1
	if kind == layerRedisCluster {
		n = clusterMasters
	}
	for i := range n {
		port, err := harness.FreePort()
		if err != nil {
			l.stop()
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "10000"}
		if kind == layerRedisCluster {
			bus, err := harness.FreePort()
			for try := 0; err == nil && bus == port && try < 5; try++ {
				bus, err = harness.FreePort() // the port just freed can come back
			}
			if err != nil || bus == port {
				l.stop()
				return nil, fmt.Errorf("no free cluster bus port beside %d: %v", port, err)
			}
			ndir := filepath.Join(dir, "redis-cluster-"+strconv.Itoa(i))
			if err := os.MkdirAll(ndir, 0o755); err != nil {
				l.stop()
				return nil, err
			}
			args = append(args, "--dir", ndir, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000")
		}
		p, err := startProc(dir, "redis-server"+strconv.Itoa(i), cfg.redis, nil, args...)
		if err != nil {
			l.stop()
			return nil, err
		}
		l.procs = append(l.procs, p)
		if err := waitRedis(p, addr); err != nil {
			l.stop()
			return nil, err
		}
		l.addrs = append(l.addrs, addr)
		if nice != 0 {
			if _, err := renice(p.pid(), nice); err != nil {
				logf("cluster: %v; Redis keeps the nice value it started with", err)
			}
		}
		if n, err := niceOf(p.pid()); err == nil {
			l.nice = n // what it runs at, set here or inherited
		}
	}
	if kind == layerRedisCluster {
		cli := filepath.Join(filepath.Dir(cfg.redis), "redis-cli")
		if p, err := exec.LookPath("redis-cli"); err == nil {
			cli = p
		}
		args := append([]string{"--cluster", "create"}, l.addrs...)
		args = append(args, "--cluster-replicas", "0", "--cluster-yes")
		if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
			l.stop()
			return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
		}
		l.url = "redis-cluster://" + strings.Join(l.addrs, ",")
		l.cli = redis.NewClusterClient(&redis.ClusterOptions{Addrs: l.addrs})
		if err := l.waitClusterOK(ctx); err != nil {
			l.stop()
			return nil, err
		}
	} else {
		l.url = "redis://" + l.addrs[0] + "/0"
		l.cli = redis.NewClient(&redis.Options{Addr: l.addrs[0]})
	}
	return l, nil
}

func (l *redisLayer) waitClusterOK(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, a := range l.addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			s, err := c.ClusterInfo(ctx).Result()
			c.Close()
			if err != nil || !strings.Contains(s, "cluster_state:ok") {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis cluster not ok after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *redisLayer) stop() {
	if l.cli != nil {
		l.cli.Close()
	}
	for _, p := range l.procs {
		p.stop()
	}
}

// cpu returns the CPU time used so far by every redis-server of the layer.
func (l *redisLayer) cpu() time.Duration {
	var sum time.Duration
	for _, p := range l.procs {
		if d, err := cpuTime(p.pid()); err == nil {
			sum += d
		}
	}
	return sum
}

func (l *redisLayer) alive() error {
	for _, p := range l.procs {
		if p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail())
		}
	}
	return nil
}

// info sums numeric fields of INFO over every master.
func (l *redisLayer) info(ctx context.Context, section string, fields ...string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, a := range l.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		s, err := c.Info(ctx, section).Result()
		c.Close()
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(s) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			for _, f := range fields {
				if k == f {
					x, err := strconv.ParseFloat(v, 64)
					if err == nil {
						out[f] += x
					}
				}
			}
		}
	}
	return out, nil
}

// usedMemory returns used_memory summed over the masters, in bytes.
func (l *redisLayer) usedMemory(ctx context.Context) float64 {
	m, err := l.info(ctx, "memory", "used_memory")
	if err != nil {
		return 0
	}
	return m["used_memory"]
}

// commands returns total_commands_processed summed over the masters.
func (l *redisLayer) commands(ctx context.Context) float64 {
	cmds, _ := l.trips(ctx)
	return cmds
}

// trips returns total_commands_processed and total_reads_processed (read
// events: about one per round trip a client makes, however many commands
// it carries) summed over the masters.
func (l *redisLayer) trips(ctx context.Context) (cmds, reads float64) {
	m, err := l.info(ctx, "stats", "total_commands_processed", "total_reads_processed")
	if err != nil {
		return 0, 0
	}
	return m["total_commands_processed"], m["total_reads_processed"]
}

// presenceEntries returns the number of presence entries of each room, by
// room index: the length of the layer's presence hash
// ("chatterpro:{<room>}:p", the nodes' default key prefix).
func (l *redisLayer) presenceEntries(ctx context.Context, rooms int) ([]int64, error) {
	pipe := l.cli.Pipeline()
	cmds := make([]*redis.IntCmd, rooms)
	marks := make([]*redis.BoolCmd, rooms)
	for r := range rooms {
		key := "chatterpro:{" + roomName(r) + "}:p"
		cmds[r] = pipe.HLen(ctx, key)
		marks[r] = pipe.HExists(ctx, key, "") // the format version's field, not an entry
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]int64, rooms)
	for r, c := range cmds {
		out[r] = c.Val()
		if marks[r].Val() {
			out[r]--
		}
	}
	return out, nil
}

// commandCalls returns the calls of each command (INFO commandstats),
// summed over the masters; commands run by scripts count too.
func (l *redisLayer) commandCalls(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, a := range l.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		s, err := c.Info(ctx, "commandstats").Result()
		c.Close()
		if err != nil {
			continue
		}
		for line := range strings.Lines(s) {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			name, isCmd := strings.CutPrefix(k, "cmdstat_")
			if !ok || !isCmd {
				continue
			}
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			if x, err := strconv.ParseFloat(calls, 64); err == nil {
				out[name] += x
			}
		}
	}
	return out
}

// topRates describes the busiest commands between two commandCalls
// snapshots taken secs apart, as "evalsha 1234/s, hset 567/s, ...".
func topRates(before, after map[string]float64, secs float64, n int) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range after {
		if d := (v - before[k]) / secs; d >= 0.5 {
			all = append(all, kv{k, d})
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(b.v, a.v) })
	var parts []string
	for i, e := range all {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f/s", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}

// entriesByProcess counts the presence entries of all rooms by the process
// part of their IDs (a connection's channel name starts with its node's
// process ID): when a check finds entries missing, it names the nodes
// whose entries they were.
func (l *redisLayer) entriesByProcess(ctx context.Context, rooms int) (map[string]int, error) {
	pipe := l.cli.Pipeline()
	cmds := make([]*redis.StringSliceCmd, rooms)
	for r := range rooms {
		cmds[r] = pipe.HKeys(ctx, "chatterpro:{"+roomName(r)+"}:p")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]int)
	for _, c := range cmds {
		for _, id := range c.Val() {
			if p, _, ok := strings.Cut(id, "!"); ok {
				out[p]++
			}
		}
	}
	return out, nil
}
