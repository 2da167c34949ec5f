package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/chatterpro/chatterpro/internal/harness"
)

// Target names in results.
const (
	targetOurs  = "chatterpro"
	targetBare  = "bare"
	targetOurs2 = "chatterpro-2nodes"
	// One node on Redis, in the cross-node scenario only: between the
	// single node on the memory layer and the two nodes, it shows what the
	// Redis path costs and what splitting the room over two processes adds.
	targetOursRedis = "chatterpro-redis"
	// One node on the memory layer whose members use the fallback
	// transport (Server-Sent Events + POST), in the sse-* scenarios only,
	// compared with the same node over websockets.
	targetOursSSE = "chatterpro-sse"
	benchSecret   = "chatbench-shared-secret-0123456789"
	bareEnv       = "CHATBENCH_SERVE_BARE"
	startupSleep  = 500 * time.Millisecond
)

// target is a running system under test: one or more server processes
// (whose CPU and memory are measured) and the HTTP bases to connect to.
type target struct {
	name  string
	nodes []*proc // chat servers
	aux   []*proc // redis-server
	bases []string
	layer string // "memory" or "redis" for ChatterPro; "" for the bare hub
	// primary is the address of the Redis primary that has a replica, and
	// replicas the node's --redis-replicas, in the replicas scenario only.
	primary  string
	replicas int
}

// cpu returns the CPU time used so far by every process of the target.
func (t *target) cpu() time.Duration {
	var sum time.Duration
	for _, p := range append(append([]*proc(nil), t.nodes...), t.aux...) {
		d, err := cpuTime(p.pid())
		if err == nil {
			sum += d
		}
	}
	return sum
}

// auxCPU returns the CPU time used so far by the target's redis-server
// (included in cpu).
func (t *target) auxCPU() time.Duration {
	var sum time.Duration
	for _, p := range t.aux {
		if d, err := cpuTime(p.pid()); err == nil {
			sum += d
		}
	}
	return sum
}

// rss returns the resident memory of the chat servers.
func (t *target) rss() int64 {
	var sum int64
	for _, p := range t.nodes {
		b, err := rssBytes(p.pid())
		if err == nil {
			sum += b
		}
	}
	return sum
}

// alive reports an error if a process of the target has exited.
func (t *target) alive() error {
	for _, p := range append(append([]*proc(nil), t.nodes...), t.aux...) {
		if p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail())
		}
	}
	return nil
}

func (t *target) stop() {
	for _, p := range t.nodes {
		p.stop()
	}
	for _, p := range t.aux {
		p.stop()
	}
}

// serverBinary returns the chatterpro binary to run, building it into dir
// when none was given.
func serverBinary(cfg *config, dir string) (string, error) {
	if cfg.server != "" {
		return cfg.server, nil
	}
	out := filepath.Join(dir, "chatterpro")
	cmd := exec.Command("go", "build", "-o", out, cfg.pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	logf("building %s", cfg.pkg)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the server (give a binary with -server): %w", err)
	}
	cfg.server = out
	return out, nil
}

// startOurs starts nodes chat servers, on one Redis of their own when
// redis is set, else (one node) on the memory layer.
func startOurs(ctx context.Context, cfg *config, dir string, nodes int, redis bool, name string) (*target, error) {
	bin, err := serverBinary(cfg, dir)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, layer: "memory"}
	layer := "memory://"
	if redis {
		rp, addr, err := startRedis(cfg, dir, "redis-server")
		if err != nil {
			return nil, err
		}
		t.aux = append(t.aux, rp)
		layer, t.layer = "redis://"+addr+"/0", "redis"
	}
	for i := range nodes {
		if err := t.startNode(ctx, dir, bin, fmt.Sprintf("chatterpro%d", i+1), layer); err != nil {
			t.stop()
			return nil, err
		}
	}
	time.Sleep(startupSleep)
	return t, nil
}

// startRedis starts a redis-server without persistence on a free port,
// with args added, and waits until it answers.
func startRedis(cfg *config, dir, name string, args ...string) (*proc, string, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	rp, err := startProc(dir, name, cfg.redis, nil, append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--maxclients", "10000"}, args...)...)
	if err != nil {
		return nil, "", err
	}
	if err := waitRedis(rp, addr); err != nil {
		rp.stop()
		return nil, "", err
	}
	return rp, addr, nil
}

// startNode starts one chat server of the target on layer, args added,
// and waits until it is healthy.
func (t *target) startNode(ctx context.Context, dir, bin, name, layer string, args ...string) error {
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := startProc(dir, name, bin, nil, append([]string{
		"--addr", addr, "--layer", layer, "--rate", "0", "--secret", benchSecret}, args...)...)
	if err != nil {
		return err
	}
	t.nodes = append(t.nodes, p)
	base := "http://" + addr
	if err := waitHTTP(ctx, p, base+"/healthz"); err != nil {
		return err
	}
	t.bases = append(t.bases, base)
	return nil
}

func startBare(ctx context.Context, dir string) (*target, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := startProc(dir, "bare", exe, []string{bareEnv + "=" + addr})
	if err != nil {
		return nil, err
	}
	t := &target{name: targetBare, nodes: []*proc{p}, bases: []string{"http://" + addr}}
	if err := waitHTTP(ctx, p, t.bases[0]+"/healthz"); err != nil {
		t.stop()
		return nil, err
	}
	time.Sleep(startupSleep)
	return t, nil
}
