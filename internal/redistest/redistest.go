// Package redistest runs a real redis-server for tests: on 127.0.0.1, on a
// free port, in the test's temporary directory, killed when the test ends.
//
// A missing redis-server fails the test; it is never skipped.
package redistest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/harness"
)

// Options configures a server started by StartOpts. The zero value is a
// server without persistence.
type Options struct {
	// AppendOnly turns on the append-only file (appendfsync always), so a
	// restarted server keeps its data. Defaults to off: no persistence.
	AppendOnly bool
	// Args are extra command-line arguments for redis-server, such as
	// "--maxmemory", "10mb". Defaults to none.
	Args []string
	// Port is the port to listen on, for a server that others were told
	// about before it started. Defaults to a free one.
	Port int
}

// Server is one redis-server process. Its methods are safe for concurrent use.
type Server struct {
	bin  string
	port int
	dir  string
	opts Options
	// sentinelConf is the configuration file of a Sentinel; "" for a data node.
	sentinelConf string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{} // closed when cmd has been waited for
	out  *harness.Log    // the running server's output
}

// Start starts a redis-server without persistence and registers its end with
// t.Cleanup. It fails the test if redis-server is missing or does not start.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartOpts(t, Options{})
}

// StartOpts is Start with options.
func StartOpts(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), dir: t.TempDir(), opts: opts}
	t.Cleanup(s.Stop)
	var lastErr error
	for range 5 { // a free port may be taken between probing and binding it
		port, err := opts.Port, error(nil)
		if port == 0 {
			if port, err = FreePort(); err != nil {
				t.Fatalf("redistest: finding a free port: %v", err)
			}
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil || opts.Port != 0 {
			break
		}
	}
	if lastErr == nil {
		return s
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Binary returns the path of redis-server, failing the test if it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	const fallback = "/usr/bin/redis-server"
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Fatalf("redistest: redis-server not found in PATH or at %s; install it (Debian package redis-server)", fallback)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) { return harness.FreePort() }

// Addr returns the server's address, "127.0.0.1:port". It stays the same
// across Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory.
func (s *Server) Dir() string { return s.dir }

func (s *Server) args() []string {
	if s.sentinelConf != "" {
		return s.sentinelArgs()
	}
	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--loglevel", "warning",
		"--logfile", "",
	}
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return append(args, s.opts.Args...)
}

// start runs the server and waits until it answers PING.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.dir
	out := &harness.Log{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := harness.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := Ping(s.Addr()); err == nil {
			// The port may have been taken between probing and binding it,
			// by a server of another test process, which answers for ours.
			if mine, err := listens(cmd.Process.Pid, s.port); err == nil && !mine {
				s.Kill()
				return fmt.Errorf("port %d is another process's: redis-server could not bind it", s.port)
			}
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within 10s", s.port)
		}
	}
}

// Ping sends PING to a Redis server and checks that it answers: PONG, or
// NOAUTH from a server that wants a password.
func Ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	// A server started with --requirepass answers NOAUTH: it is up too.
	if !bytes.HasPrefix(buf[:n], []byte("+PONG")) && !bytes.HasPrefix(buf[:n], []byte("-NOAUTH")) {
		return fmt.Errorf("redistest: unexpected PING reply %q", buf[:n])
	}
	return nil
}

// Kill kills the server with SIGKILL and waits for it to exit. It does
// nothing if the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop ends the server (SIGKILL: tests keep no data across Stop). It is
// registered with t.Cleanup and safe to call more than once.
func (s *Server) Stop() { s.Kill() }

// Restart starts the server again on the same port with the same directory
// (with AppendOnly its data survives), killing it first if it runs.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	var err error
	for range 50 { // the port may linger briefly after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redistest: restarting: %v", err)
}

// Running reports whether the server process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// listens reports whether process pid has a socket listening on port of
// 127.0.0.1, from /proc/net/tcp and the process's descriptors (an error
// where /proc/net/tcp cannot be read: not Linux).
func listens(pid, port int) (bool, error) {
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, err
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	sockets := make(map[string]bool)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st ... inode
		if f := strings.Fields(line); len(f) > 9 && f[1] == local && f[3] == "0A" {
			sockets["socket:["+f[9]+"]"] = true
		}
	}
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fds)
	if err != nil {
		return false, nil // exited: a server that cannot bind its port stops at once
	}
	for _, e := range entries {
		if link, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && sockets[link] {
			return true, nil
		}
	}
	return false, nil
}
