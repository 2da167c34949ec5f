// Command chatbench is the load generator of the ChatterPro benchmarks. It
// starts the servers itself (a built chatterpro, a redis-server for the
// cross-node scenario, and a bare coder/websocket hub as the baseline),
// speaks the chat's wire interface to them, and reports deliveries per
// second, latency percentiles, losses, duplicates, server CPU and memory,
// and every figure of ChatterPro as a ratio to the bare hub of the same run.
// It also runs a centrifuge server (anchors/centrifuge, a Go module of its
// own that chatbench builds; its Redis broker without history) in the
// fan-out, cross-node and many-rooms scenarios, speaking centrifuge's
// protocol to it, and reports ChatterPro / centrifuge ratios and the
// latency of every ladder step beside centrifuge's and the bare hub's.
// With -socketio (or -target socketio) the fan-out scenario also runs a
// Socket.IO 4.8 node on its Redis adapter (anchors/socketio, Node.js;
// chatbench installs its modules once with npm ci into the user's cache
// folder), speaking Engine.IO to it: its ladder sits beside the others,
// and the report checks the stretch target, ChatterPro's p50 below
// Socket.IO's at the highest step of at most 210 msgs/s both passed.
//
//	go run ./cmd/chatbench -scenario fanout
//	go run ./cmd/chatbench -scenario fanout -socketio
//	go run ./cmd/chatbench -scenario all -runs 3 -json bench.json -md BENCHMARKS.md
//	go run ./cmd/chatbench -merge a.json,b.json -md BENCHMARKS.md
//
// chatbench -scenario cluster runs many people in rooms of 100 over several
// nodes on one Redis or a Redis Cluster, the load generator split over
// worker processes (chatbench itself, re-executed), and kills a node at
// the end (see cluster.go).
//
// Scenarios: fanout (one room, a ladder of publish rates), rooms (many small
// rooms, every member sending once a second), idle (memory per connection),
// connect (join rate), crossnode (fan-out over two nodes sharing Redis,
// compared with one node on the memory layer; one node on Redis is shown
// beside them, to tell the cost of the Redis path from that of splitting
// the room), sse-fanout and sse-idle (fan-out and idle with the members on
// the fallback transport, Server-Sent Events + POST, beside the same
// scenario over websockets on the same kind of node), replicas (the rooms
// load on one node whose Redis primary has a replica, with
// --redis-replicas 0 and 1: delivery and acknowledgement latency, see
// replicas.go), all. Two ladders are compared at the highest
// rate both passed: CPU per delivery falls as the rate climbs, so each
// ladder's own highest step would not be a fair match. Server CPU counts
// every process of a target, redis-server included.
//
// chatbench -bare -addr 127.0.0.1:4000 runs only the bare hub.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

type config struct {
	scenario string
	target   string
	server   string
	pkg      string
	redis    string
	runs     int
	conc     int
	ips      int
	settle   time.Duration
	drain    time.Duration
	timeout  time.Duration

	members    int
	senders    int
	rateStart  float64
	rateFactor float64
	steps      int
	stepDur    time.Duration
	p99Limit   time.Duration
	maxDur     time.Duration
	retry      bool

	rooms        int
	replicaRooms int
	roomSize     int
	roomsDur     time.Duration
	warmup       time.Duration

	idleConns    int
	idleRoomSize int
	idleHold     time.Duration
	connectConns int

	cluster clusterConfig

	jsonOut    string
	mdOut      string
	cpuProfile string
	merge      string

	centrifuge    bool
	centrifugeBin string

	socketio    bool
	socketioDir string
}

func parseFlags(args []string) (*config, bool, string, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.StringVar(&cfg.scenario, "scenario", "fanout", "fanout, rooms, idle, connect, crossnode, sse-fanout, sse-idle, replicas (comma-separated), or all; or cluster alone")
	fs.StringVar(&cfg.target, "target", "both", "both (chatterpro and its anchors: the bare hub, and centrifuge unless -centrifuge=false), ours, bare, centrifuge, or socketio (fanout only)")
	fs.BoolVar(&cfg.centrifuge, "centrifuge", true, "with -target both: also run the centrifuge anchor (fanout, crossnode, rooms; built from "+anchorDir+")")
	fs.StringVar(&cfg.centrifugeBin, "centrifuge-bin", "", "centrifuge anchor binary (default: go build of "+anchorDir+")")
	fs.BoolVar(&cfg.socketio, "socketio", false, "also run the Socket.IO anchor (Node.js, on its Redis adapter) in fanout, from "+socketioDir+" (its modules installed once with npm ci into the user's cache folder)")
	fs.StringVar(&cfg.socketioDir, "socketio-dir", "", "Socket.IO anchor folder holding server.js and its node_modules (default: "+socketioDir+" with modules from the cache)")
	fs.StringVar(&cfg.server, "server", "", "chatterpro binary (default: go build of -pkg)")
	fs.StringVar(&cfg.pkg, "pkg", "./cmd/chatterpro", "package built when -server is empty")
	fs.StringVar(&cfg.redis, "redis", "/usr/bin/redis-server", "redis-server binary for crossnode, rooms and replicas")
	fs.IntVar(&cfg.runs, "runs", 1, "runs per scenario and target; reports give medians")
	fs.IntVar(&cfg.conc, "conc", 32, "connections opened in parallel")
	fs.IntVar(&cfg.ips, "source-ips", 16, "loopback source addresses to spread connections over (127.0.0.2...)")
	fs.DurationVar(&cfg.settle, "settle", time.Second, "pause after connecting, before measuring")
	fs.DurationVar(&cfg.drain, "drain", 2*time.Second, "how long to wait for late deliveries after sending stops")
	fs.DurationVar(&cfg.timeout, "timeout", 90*time.Minute, "upper bound of the whole command (-scenario all took about 7 minutes per run on 2 cores before the centrifuge targets, which add five ladders or rooms runs)")
	fs.IntVar(&cfg.members, "members", 500, "fanout/crossnode: members of the room")
	fs.IntVar(&cfg.senders, "senders", 4, "fanout/crossnode: members that publish")
	fs.Float64Var(&cfg.rateStart, "rate-start", 10, "fanout/crossnode: first publish rate (messages/s, all senders)")
	fs.Float64Var(&cfg.rateFactor, "rate-factor", 1.4, "fanout/crossnode: rate multiplier per step")
	fs.BoolVar(&cfg.retry, "retry", true, "fanout/crossnode: repeat a failed step once before ending the ladder")
	fs.IntVar(&cfg.steps, "steps", 18, "fanout/crossnode: most steps of the ladder")
	fs.DurationVar(&cfg.stepDur, "step", 4*time.Second, "fanout/crossnode: sending time per step")
	fs.DurationVar(&cfg.p99Limit, "p99-limit", 100*time.Millisecond, "fanout/crossnode: a step passes with p99 below this and nothing lost")
	fs.DurationVar(&cfg.maxDur, "max-duration", 90*time.Second, "fanout/crossnode: longest ladder")
	fs.IntVar(&cfg.rooms, "rooms", 500, "rooms: number of rooms")
	fs.IntVar(&cfg.replicaRooms, "replica-rooms", 200, "replicas: number of rooms (of -room-size members sending once a second for -duration, like rooms)")
	fs.IntVar(&cfg.roomSize, "room-size", 4, "rooms, replicas: members per room")
	fs.DurationVar(&cfg.roomsDur, "duration", 12*time.Second, "rooms: sending time")
	fs.DurationVar(&cfg.warmup, "warmup", 3*time.Second, "rooms: messages scheduled this long after the start count for losses but not for latency; fanout/crossnode: length of an unmeasured first step at -rate-start")
	fs.IntVar(&cfg.idleConns, "conns", 10000, "idle: connections")
	fs.IntVar(&cfg.idleRoomSize, "idle-room-size", 10, "idle/connect: members per room")
	fs.DurationVar(&cfg.idleHold, "hold", 30*time.Second, "idle: how long the connections are held before memory is measured again (longer than the server's 25 s ping interval, so every connection has been pinged)")
	fs.IntVar(&cfg.connectConns, "connect-conns", 2000, "connect: connections opened")
	cc := &cfg.cluster
	fs.IntVar(&cc.nodes, "nodes", 8, "cluster: chatterpro nodes")
	fs.IntVar(&cc.clients, "clients", 100000, "cluster: clients (people), each with its own session, in -rooms rooms (-rooms defaults to 1000 here)")
	fs.StringVar(&cc.layer, "layer-kind", layerRedis, "cluster: redis (one redis-server) or redis-cluster (three masters)")
	fs.IntVar(&cc.workers, "workers", 0, "cluster: load generator processes (default: one per 12 500 clients)")
	fs.DurationVar(&cc.steady, "steady", 60*time.Second, "cluster: steady chat phase")
	fs.Float64Var(&cc.rate, "room-rate", 0.2, "cluster: messages per room per second in the steady and kill phases")
	fs.StringVar(&cc.ladder, "ladder", "0.5,1", "cluster: higher per-room rates tried after the steady phase, until one fails (empty: none)")
	fs.DurationVar(&cc.ladderStep, "ladder-step", 30*time.Second, "cluster: length of each ladder step")
	fs.DurationVar(&cc.idle, "idle-window", 15*time.Second, "cluster: quiet window after presence converged, measuring what presence upkeep costs (0: none)")
	fs.BoolVar(&cc.kill, "kill", true, "cluster: SIGKILL one node at the end and measure the way back")
	fs.BoolVar(&cc.keepLogs, "keep-logs", false, "cluster: keep the nodes' and Redis's logs (the folder is printed)")
	fs.DurationVar(&cc.presenceTTL, "presence-ttl", 30*time.Second, "cluster: the nodes' --presence-ttl")
	fs.IntVar(&cc.maxConnecting, "max-connecting", 0, "cluster: the nodes' --max-connecting (0: their default)")
	fs.IntVar(&cc.redisNice, "redis-nice", -10, "cluster: the redis-servers' nice value, so that Redis's one command thread does not wait behind the nodes' and load generator's threads on a shared machine, as it would not on cores of its own (0: leave it; below 0 needs root or CAP_SYS_NICE)")
	fs.StringVar(&cc.profileDir, "profile-dir", "", "cluster: write CPU profiles of every node and load generator process to this folder, over the first 30 s of the steady phase and after the kill")
	fs.DurationVar(&cc.p99, "cluster-p99", 250*time.Millisecond, "cluster: a chat phase passes with p99 below this and nothing lost")
	fs.DurationVar(&cc.drain, "cluster-drain", 5*time.Second, "cluster: how long a chat phase waits for late deliveries")
	fs.StringVar(&cc.merge, "cluster-merge", "", "cluster: only render: these JSON reports of the cluster scenario (comma-separated) into the -md section and -json")
	fs.StringVar(&cfg.jsonOut, "json", "", "write results as JSON to this file")
	fs.StringVar(&cfg.mdOut, "md", "", "write a Markdown report to this file (a section after the notes marker is kept)")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write chatbench's own CPU profile to this file")
	fs.StringVar(&cfg.merge, "merge", "", "only render: merge these JSON reports (comma-separated; later scenarios replace earlier) into -md and -json")
	var serveBareFlag bool
	fs.BoolVar(&serveBareFlag, "bare", false, "only run the bare hub on -addr, until interrupted")
	fs.BoolVar(&serveBareFlag, "serve-bare", false, "the same as -bare")
	addr := fs.String("addr", "127.0.0.1:4000", "with -bare: listen address")
	if err := fs.Parse(args); err != nil {
		return nil, false, "", err
	}
	if fs.NArg() > 0 {
		return nil, false, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.scenario == "cluster" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rooms"] {
			cfg.rooms = 1000
		}
		if cc.nodes < 1 || cc.clients < 1 || cc.rate <= 0 || cc.steady <= 0 || cc.presenceTTL <= 0 {
			return nil, false, "", fmt.Errorf("-nodes, -clients, -room-rate, -steady and -presence-ttl must be positive")
		}
		switch cc.layer {
		case layerRedis, layerRedisCluster:
		default:
			return nil, false, "", fmt.Errorf("-layer-kind must be %s or %s", layerRedis, layerRedisCluster)
		}
	}
	if cfg.runs < 1 || cfg.conc < 1 || cfg.members < 1 || cfg.senders < 1 || cfg.rateStart <= 0 ||
		cfg.rateFactor <= 1 || cfg.rooms < 1 || cfg.replicaRooms < 1 || cfg.roomSize < 1 || cfg.idleConns < 1 || cfg.idleRoomSize < 1 || cfg.connectConns < 1 {
		return nil, false, "", fmt.Errorf("sizes must be positive and -rate-factor above 1")
	}
	switch cfg.target {
	case "both", "ours", "bare", "centrifuge", targetSocketIO:
	default:
		return nil, false, "", fmt.Errorf("-target must be both, ours, bare, centrifuge or socketio")
	}
	return cfg, serveBareFlag, *addr, nil
}

var allScenarios = []string{"fanout", "crossnode", "rooms", scenarioReplicas, "idle", "connect", scenarioSSEFanout, scenarioSSEIdle}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func main() {
	if spec := os.Getenv(clusterWorkerEnv); spec != "" {
		if err := runWorker(spec); err != nil {
			fmt.Fprintln(os.Stderr, "chatbench worker:", err)
			os.Exit(1)
		}
		return
	}
	if addr := os.Getenv(bareEnv); addr != "" {
		if err := serveBare(addr); err != nil {
			fmt.Fprintln(os.Stderr, "bare hub:", err)
			os.Exit(1)
		}
		return
	}
	cfg, bare, addr, err := parseFlags(os.Args[1:])
	if err != nil {
		if err == flag.ErrHelp {
			return
		}
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(2)
	}
	if bare {
		if err := serveBare(addr); err != nil {
			fmt.Fprintln(os.Stderr, "bare hub:", err)
			os.Exit(1)
		}
		return
	}
	if cfg.merge != "" {
		rep, err := mergeReports(strings.Split(cfg.merge, ","))
		if err == nil && cfg.mdOut != "" {
			err = rep.writeMarkdown(cfg.mdOut)
		}
		if err == nil && cfg.jsonOut != "" {
			err = rep.writeJSON(cfg.jsonOut)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatbench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.scenario == "cluster" {
		_, err := runClusterScenario(ctx, cfg, os.Args[1:])
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "chatbench:", err)
			os.Exit(1)
		}
		return
	}
	if _, err := run(ctx, cfg, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "chatbench:", err)
		os.Exit(1)
	}
}

// run runs the configured scenarios and writes the reports.
func run(ctx context.Context, cfg *config, args []string) ([]*result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	limit := raiseFileLimit(1 << 20)
	logf("file descriptor limit %d", limit)
	dir, err := os.MkdirTemp("", "chatbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	nc := newNetClient(cfg.ips)
	defer nc.close()

	scenarios := strings.Split(cfg.scenario, ",")
	if cfg.scenario == "all" {
		scenarios = allScenarios
	}
	var results []*result
	for _, s := range scenarios {
		rs, err := runScenario(ctx, cfg, nc, dir, s)
		results = append(results, rs...)
		if err != nil {
			err = fmt.Errorf("%s: %w", s, err)
			if cfg.jsonOut != "" && len(results) > 0 {
				// What finished is kept: render it with -merge.
				partial := cfg.jsonOut + ".partial"
				if werr := buildReport(cfg, args, results).writeJSON(partial); werr == nil {
					err = fmt.Errorf("%w (the runs that finished are in %s)", err, partial)
				}
			}
			return results, err
		}
	}
	rep := buildReport(cfg, args, results)
	fmt.Println(rep.markdown(""))
	if cfg.jsonOut != "" {
		if err := rep.writeJSON(cfg.jsonOut); err != nil {
			return results, err
		}
	}
	if cfg.mdOut != "" {
		if err := rep.writeMarkdown(cfg.mdOut); err != nil {
			return results, err
		}
	}
	for _, r := range results {
		if r.Error != "" {
			return results, fmt.Errorf("%s against %s failed: %s", r.Scenario, r.Target, strings.SplitN(r.Error, "\n", 2)[0])
		}
	}
	return results, nil
}
