package redistest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterOptions configures a cluster started by StartClusterOpts. The zero
// value is StartCluster's cluster of three masters.
type ClusterOptions struct {
	// Masters is the number of master nodes (no replicas). Defaults to 3.
	Masters int
	// NodeTimeout is the cluster's node timeout: how long a master may be
	// unreachable before the others mark it as failed. Defaults to 2 s.
	NodeTimeout time.Duration
	// Args are extra command-line arguments for every redis-server.
	// Defaults to none.
	Args []string
}

// Cluster is a Redis Cluster of masters without replicas on 127.0.0.1, one
// redis-server per master, each in a directory of its own with its
// nodes.conf, so that a killed node restarted on its port rejoins the
// cluster with its slots. Its methods are safe for concurrent use.
type Cluster struct {
	nodes []*Server
	cli   string
}

// StartCluster starts a Redis Cluster of the given number of masters
// (redis-server --cluster-enabled yes, then redis-cli --cluster create),
// waits until every node reports cluster_state:ok, and registers its end
// with t.Cleanup. It fails the test if redis-server or redis-cli is missing
// or the cluster does not form.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	return StartClusterOpts(t, ClusterOptions{Masters: masters})
}

// StartClusterOpts is StartCluster with options.
func StartClusterOpts(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 {
		// redis-cli --cluster create refuses fewer than three masters.
		t.Fatalf("redistest: a cluster needs at least 3 masters, not %d", opts.Masters)
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = 2 * time.Second
	}
	c := &Cluster{cli: cliBinary(t)}
	bin := Binary(t)
	for range opts.Masters {
		c.nodes = append(c.nodes, startNode(t, bin, opts))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(c.cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.WaitOK(t)
	return c
}

// startNode starts one cluster-enabled redis-server on a free port whose
// cluster bus has a free port of its own (port+10000 may not exist).
func startNode(t testing.TB, bin string, opts ClusterOptions) *Server {
	t.Helper()
	s := &Server{bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	var lastErr error
	for range 5 {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		bus, err := FreePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		if bus == port {
			continue
		}
		s.port = port
		s.opts = Options{Args: append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
		}, opts.Args...)}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: starting a cluster node: %v", lastErr)
	return nil
}

// cliBinary returns the path of redis-cli, failing the test if it is missing.
func cliBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-cli"); err == nil {
		return p
	}
	const fallback = "/usr/bin/redis-cli"
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Fatalf("redistest: redis-cli not found in PATH or at %s; install it (Debian package redis-tools or redis-server)", fallback)
	return ""
}

// Addrs returns the addresses of the cluster's nodes, "127.0.0.1:port".
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Len returns the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i, to Kill or Restart it. A master without replicas
// stays down while killed; restarted on its port with its nodes.conf it
// takes its slots back.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// Stop kills every node. It is registered with t.Cleanup.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
}

// Do runs one command on node i with redis-cli and returns its output.
func (c *Cluster) Do(i int, args ...string) (string, error) {
	full := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(c.nodes[i].Port())}, args...)
	var out bytes.Buffer
	cmd := exec.Command(c.cli, full...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	s := out.String()
	if err == nil && (strings.HasPrefix(s, "ERR") || strings.HasPrefix(s, "(error)")) {
		err = fmt.Errorf("redistest: %s: %s", strings.Join(args, " "), strings.TrimSpace(s))
	}
	return s, err
}

// State returns the cluster_state node i reports ("ok" or "fail").
func (c *Cluster) State(i int) (string, error) {
	out, err := c.Do(i, "CLUSTER", "INFO")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_state:"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("redistest: no cluster_state in CLUSTER INFO of node %d: %q", i, out)
}

// WaitOK waits, up to 30 s, until every running node reports
// cluster_state:ok, failing the test otherwise.
func (c *Cluster) WaitOK(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var bad []string
		for i, n := range c.nodes {
			if !n.Running() {
				continue
			}
			st, err := c.State(i)
			if err != nil {
				bad = append(bad, fmt.Sprintf("node %d (%s): %v", i, n.Addr(), err))
			} else if st != "ok" {
				bad = append(bad, fmt.Sprintf("node %d (%s): cluster_state:%s", i, n.Addr(), st))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster not ok after 30s: %s", strings.Join(bad, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// KeySlot returns the hash slot of a key (CLUSTER KEYSLOT).
func (c *Cluster) KeySlot(key string) (int, error) {
	for i, n := range c.nodes {
		if !n.Running() {
			continue
		}
		out, err := c.Do(i, "CLUSTER", "KEYSLOT", key)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
	return 0, fmt.Errorf("redistest: no node running")
}

// Owner returns the index of the master that serves a hash slot, as the
// first running node sees it (CLUSTER NODES).
func (c *Cluster) Owner(slot int) (int, error) {
	for i, n := range c.nodes {
		if !n.Running() {
			continue
		}
		out, err := c.Do(i, "CLUSTER", "NODES")
		if err != nil {
			return 0, err
		}
		return c.ownerFromNodes(out, slot)
	}
	return 0, fmt.Errorf("redistest: no node running")
}

// ownerFromNodes reads CLUSTER NODES: per node a line
// "<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...",
// slots as "n" or "from-to" (and "[...]" for slots in migration).
func (c *Cluster) ownerFromNodes(out string, slot int) (int, error) {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "master") {
			continue
		}
		hostport, _, _ := strings.Cut(f[1], "@")
		_, ps, _ := strings.Cut(hostport, ":")
		port, _ := strconv.Atoi(ps)
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue
			}
			from, to, ok := strings.Cut(r, "-")
			if !ok {
				to = from
			}
			lo, err1 := strconv.Atoi(from)
			hi, err2 := strconv.Atoi(to)
			if err1 != nil || err2 != nil || slot < lo || slot > hi {
				continue
			}
			for i, n := range c.nodes {
				if n.Port() == port {
					return i, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("redistest: no master serves slot %d", slot)
}
