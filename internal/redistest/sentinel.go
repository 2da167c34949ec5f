package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configures a deployment started by StartSentinel. The
// zero value is one primary, one replica and one Sentinel.
type SentinelOptions struct {
	// Replicas is the number of replicas of the primary. Defaults to 1.
	Replicas int
	// Sentinels is the number of Sentinel processes; their quorum is a
	// majority of them. Defaults to 1.
	Sentinels int
	// MasterName is the name the Sentinels know the primary by. Defaults
	// to "mymaster".
	MasterName string
	// DownAfter is Sentinel's down-after-milliseconds: how long the primary
	// may not answer before it is considered down. Defaults to 1 s.
	DownAfter time.Duration
	// FailoverTimeout is Sentinel's failover-timeout. Defaults to 3 s.
	FailoverTimeout time.Duration
	// Password, if set, is required by the primary and the replicas
	// (requirepass), which use it between themselves (masterauth), and
	// given to the Sentinels (auth-pass). Defaults to none.
	Password string
	// SentinelPassword, if set, is required by the Sentinels themselves
	// (requirepass in their configuration). Defaults to none.
	SentinelPassword string
	// Args are extra command-line arguments for the primary and the
	// replicas. Defaults to none.
	Args []string
}

// Sentinel is a primary, its replicas and Sentinel processes watching
// them, all redis-server processes on 127.0.0.1 (the Sentinels run as
// "redis-server <conf> --sentinel"). Its methods are safe for concurrent
// use.
type Sentinel struct {
	opts      SentinelOptions
	data      []*Server // data[0] is the first primary
	sentinels []*Server
}

// StartSentinel starts a primary, its replicas and the Sentinels, waits
// until the replicas are in sync and every Sentinel knows them (and the
// other Sentinels), and registers their end with t.Cleanup. It fails the
// test if redis-server is missing or the deployment does not form within
// 30 s.
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels <= 0 {
		opts.Sentinels = 1
	}
	if opts.MasterName == "" {
		opts.MasterName = "mymaster"
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	if opts.FailoverTimeout <= 0 {
		opts.FailoverTimeout = 3 * time.Second
	}
	s := &Sentinel{opts: opts}
	var auth []string
	if opts.Password != "" {
		auth = []string{"--requirepass", opts.Password, "--masterauth", opts.Password}
	}
	// Replicas must be able to take over, so none is left out of elections.
	primary := StartOpts(t, Options{Args: append(append([]string{}, auth...), opts.Args...)})
	s.data = append(s.data, primary)
	for range opts.Replicas {
		args := append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())}, auth...)
		s.data = append(s.data, StartOpts(t, Options{Args: append(args, opts.Args...)}))
	}
	deadline := time.Now().Add(30 * time.Second)
	s.waitFor(t, deadline, "the replicas to be in sync", func(ctx context.Context) error {
		return s.inSync(ctx, primary.Addr(), opts.Replicas)
	})
	bin := Binary(t)
	for range opts.Sentinels {
		s.sentinels = append(s.sentinels, s.startSentinel(t, bin, primary.Port()))
	}
	s.waitFor(t, deadline, "every Sentinel to know the replicas and each other", s.known)
	return s
}

// startSentinel starts one Sentinel watching the primary on port.
func (s *Sentinel) startSentinel(t testing.TB, bin string, primary int) *Server {
	t.Helper()
	o := s.opts
	quorum := o.Sentinels/2 + 1
	var conf strings.Builder
	fmt.Fprintf(&conf, "sentinel monitor %s 127.0.0.1 %d %d\n", o.MasterName, primary, quorum)
	fmt.Fprintf(&conf, "sentinel down-after-milliseconds %s %d\n", o.MasterName, o.DownAfter.Milliseconds())
	fmt.Fprintf(&conf, "sentinel failover-timeout %s %d\n", o.MasterName, o.FailoverTimeout.Milliseconds())
	fmt.Fprintf(&conf, "sentinel parallel-syncs %s 1\n", o.MasterName)
	if o.Password != "" {
		fmt.Fprintf(&conf, "sentinel auth-pass %s %s\n", o.MasterName, o.Password)
	}
	if o.SentinelPassword != "" {
		fmt.Fprintf(&conf, "requirepass %s\n", o.SentinelPassword)
	}
	srv := &Server{bin: bin, dir: t.TempDir()}
	t.Cleanup(srv.Stop)
	// Sentinel rewrites its configuration file: it lives in its directory.
	srv.sentinelConf = filepath.Join(srv.dir, "sentinel.conf")
	var lastErr error
	for range 5 {
		if err := os.WriteFile(srv.sentinelConf, []byte(conf.String()), 0o600); err != nil {
			t.Fatalf("redistest: writing the Sentinel configuration: %v", err)
		}
		port, err := FreePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		srv.port = port
		if lastErr = srv.start(); lastErr == nil {
			return srv
		}
	}
	t.Fatalf("redistest: starting a Sentinel: %v", lastErr)
	return nil
}

// sentinelArgs are the arguments of a Sentinel process.
func (s *Server) sentinelArgs() []string {
	return []string{
		s.sentinelConf, "--sentinel",
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
		"--logfile", "",
	}
}

// waitFor polls cond until it returns nil, failing the test at deadline.
func (s *Sentinel) waitFor(t testing.TB, deadline time.Time, what string, cond func(ctx context.Context) error) {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := cond(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client returns a client of one data node.
func (s *Sentinel) client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Password: s.opts.Password, MaxRetries: -1, DialTimeout: time.Second})
}

// sentinelClient returns a client of Sentinel i.
func (s *Sentinel) sentinelClient(i int) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[i].Addr(), Password: s.opts.SentinelPassword, MaxRetries: -1, DialTimeout: time.Second})
}

// inSync reports whether the node at addr is a primary with n replicas
// online.
func (s *Sentinel) inSync(ctx context.Context, addr string, n int) error {
	c := s.client(addr)
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:master") {
		return fmt.Errorf("%s is not a primary: %q", addr, info)
	}
	if online := strings.Count(info, ",state=online,"); online < n {
		return fmt.Errorf("%s has %d replicas online, want %d", addr, online, n)
	}
	return nil
}

// known reports whether every Sentinel lists every replica, none of them
// down, and every other Sentinel.
func (s *Sentinel) known(ctx context.Context) error {
	for i := range s.sentinels {
		sc := s.sentinelClient(i)
		reps, err := sc.Replicas(ctx, s.opts.MasterName).Result()
		if err == nil && len(reps) < s.opts.Replicas {
			err = fmt.Errorf("Sentinel %d knows %d replicas, want %d", i, len(reps), s.opts.Replicas)
		}
		for _, r := range reps {
			if err == nil && r["flags"] != "slave" {
				err = fmt.Errorf("Sentinel %d sees replica %s:%s as %q", i, r["ip"], r["port"], r["flags"])
			}
		}
		if err == nil {
			var others []map[string]string
			if others, err = sc.Sentinels(ctx, s.opts.MasterName).Result(); err == nil && len(others) < len(s.sentinels)-1 {
				err = fmt.Errorf("Sentinel %d knows %d other Sentinels, want %d", i, len(others), len(s.sentinels)-1)
			}
		}
		_ = sc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// MasterName returns the name the Sentinels know the primary by.
func (s *Sentinel) MasterName() string { return s.opts.MasterName }

// Addrs returns the Sentinels' addresses, "127.0.0.1:port".
func (s *Sentinel) Addrs() []string {
	out := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		out[i] = n.Addr()
	}
	return out
}

// Nodes returns the data nodes: the first primary, then the replicas.
func (s *Sentinel) Nodes() []*Server { return s.data }

// Node returns the data node listening on addr, or nil.
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range s.data {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// MasterAddr returns the primary's address as the first Sentinel that
// answers reports it.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var lastErr error
	for i := range s.sentinels {
		if !s.sentinels[i].Running() {
			continue
		}
		sc := s.sentinelClient(i)
		hp, err := sc.GetMasterAddrByName(ctx, s.opts.MasterName).Result()
		_ = sc.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("redistest: no Sentinel names the primary: %v", lastErr)
}

// Primary returns the data node the Sentinels name as the primary.
func (s *Sentinel) Primary(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := s.Node(addr)
	if n == nil {
		t.Fatalf("redistest: the Sentinels name %s, which is none of the data nodes", addr)
	}
	return n
}

// WaitFailover waits, up to d, until the Sentinels name a primary other
// than old, that primary says it is one, and (with more than one replica
// at the start) it has a replica online again. It returns the new
// primary, failing the test otherwise.
func (s *Sentinel) WaitFailover(t testing.TB, old *Server, d time.Duration) *Server {
	t.Helper()
	var n *Server
	s.waitFor(t, time.Now().Add(d), "a failover away from "+old.Addr(), func(ctx context.Context) error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr == old.Addr() {
			return fmt.Errorf("the Sentinels still name %s", addr)
		}
		if n = s.Node(addr); n == nil {
			return fmt.Errorf("the Sentinels name %s, none of the data nodes", addr)
		}
		c := s.client(addr)
		defer c.Close()
		role, err := c.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s says it is a %v", addr, role)
		}
		return nil
	})
	return n
}

// WaitReplicas waits, up to d, until the current primary has n replicas
// online, failing the test otherwise.
func (s *Sentinel) WaitReplicas(t testing.TB, n int, d time.Duration) {
	t.Helper()
	s.waitFor(t, time.Now().Add(d), fmt.Sprintf("%d replicas online", n), func(ctx context.Context) error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		return s.inSync(ctx, addr, n)
	})
}

// Pause stops the server with SIGSTOP: it keeps its connections but
// answers nothing until Resume. It does nothing if the server is not
// running.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a server stopped by Pause.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Stop kills every process (SIGKILL ends a paused one too). Each one's
// end is registered with t.Cleanup already.
func (s *Sentinel) Stop() {
	var wg sync.WaitGroup
	for _, n := range append(append([]*Server{}, s.sentinels...), s.data...) {
		wg.Go(n.Stop)
	}
	wg.Wait()
}
