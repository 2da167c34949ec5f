package testnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

// DefaultSecret is the session secret of nodes started without one, so
// that every node of a test accepts the others' cookies.
const DefaultSecret = "testnode-shared-secret-0123456789"

// startTimeout bounds how long Start waits for /healthz.
const startTimeout = 15 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Build compiles ./cmd/chatterpro once per test binary and returns the
// binary's path. It builds with -race when the tests run with -race. The
// binary lives in a temporary directory that Main removes at the end.
func Build(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildBin, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("testnode: %v", buildErr)
	}
	return buildBin
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

func build() (string, error) {
	gotool := goTool()
	out, err := exec.Command(gotool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	dir, err := os.MkdirTemp("", "chatterpro-testnode-")
	if err != nil {
		return "", fmt.Errorf("creating the build directory: %w", err)
	}
	buildDir = dir
	bin := filepath.Join(dir, "chatterpro")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/chatterpro")
	cmd := exec.Command(gotool, args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ./cmd/chatterpro: %w\n%s", err, out)
	}
	return bin, nil
}

// Main runs the tests, removes the binary Build made, then fails the run if
// goroutines outlive the tests (like leakcheck.Main). Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if code == 0 {
		if leaked := leakcheck.Wait(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines outlived the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Options configures a node started by Start. The zero value is a node on
// the memory layer with DefaultSecret.
type Options struct {
	// Layer is passed as --layer. Defaults to none: the server's own
	// default (memory://) or CHATTERPRO_LAYER from Env.
	Layer string
	// Secret is passed as --secret. Defaults to DefaultSecret.
	Secret string
	// Args are extra command-line arguments, e.g. "--grace", "2s".
	// Defaults to none.
	Args []string
	// Env are extra environment variables ("NAME=value") on top of the
	// test's environment. Defaults to none.
	Env []string
	// AddrFromEnv passes the listen address as CHATTERPRO_ADDR instead of
	// --addr. Defaults to the flag.
	AddrFromEnv bool
	// Port is the port to listen on. Defaults to a free one.
	Port int
}

// Node is one running (or stopped) chatterpro process.
type Node struct {
	t    testing.TB
	bin  string
	opts Options
	port int
	log  *harness.Log

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	exit   int           // exit code once done; -1 when killed by a signal
	signal time.Time     // when Term or Kill was last sent
}

// Start builds the binary if needed, starts a node on 127.0.0.1 and waits
// (up to 15 s) until GET /healthz answers 200. The node is killed when the
// test ends. It fails the test, with the node's log, if the node does not
// come up.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	n := &Node{t: t, bin: Build(t), opts: opts, log: &harness.Log{}}
	if n.opts.Secret == "" {
		n.opts.Secret = DefaultSecret
	}
	t.Cleanup(func() { n.Kill() })
	var err error
	for attempt := 0; attempt < 5; attempt++ { // a free port can be taken before we bind it
		n.port = opts.Port
		if n.port == 0 {
			if n.port, err = harness.FreePort(); err != nil {
				t.Fatalf("testnode: finding a free port: %v", err)
			}
		}
		if err = n.start(); err == nil {
			return n
		}
		if opts.Port != 0 || !strings.Contains(n.Log(), "address already in use") {
			break
		}
	}
	t.Fatalf("testnode: %v\n--- node log ---\n%s", err, n.Log())
	return nil
}

// Restart starts the node again with the same options on the same port,
// killing it first if it still runs. Its log keeps growing.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Kill()
	var err error
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) { // the port may linger briefly
		if err = n.start(); err == nil {
			return
		}
		if !strings.Contains(n.Log(), "address already in use") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("testnode: restarting: %v\n--- node log ---\n%s", err, n.Log())
}

func (n *Node) start() error {
	var args []string
	env := append(os.Environ(), n.opts.Env...)
	if n.opts.AddrFromEnv {
		env = append(env, "CHATTERPRO_ADDR="+n.Addr())
	} else {
		args = append(args, "--addr", n.Addr())
	}
	if n.opts.Layer != "" {
		args = append(args, "--layer", n.opts.Layer)
	}
	args = append(args, "--secret", n.opts.Secret)
	args = append(args, n.opts.Args...)
	cmd := exec.Command(n.bin, args...)
	cmd.Env = env
	cmd.Stdout = n.log
	cmd.Stderr = n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", n.bin, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.exit, n.signal = cmd, done, 0, time.Time{}
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		n.mu.Lock()
		n.exit = code
		n.mu.Unlock()
		close(done)
	}()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Get(n.URL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("node on port %d exited at start (code %d)", n.port, n.exitCode())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.Kill()
			return fmt.Errorf("node on port %d did not answer /healthz within %v", n.port, startTimeout)
		}
	}
}

func (n *Node) exitCode() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exit
}

// URL returns "http://127.0.0.1:port".
func (n *Node) URL() string { return "http://" + n.Addr() }

// Addr returns "127.0.0.1:port".
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// Port returns the node's port.
func (n *Node) Port() int { return n.port }

// Log returns everything the node has written to stdout and stderr.
func (n *Node) Log() string { return n.log.String() }

// Running reports whether the process is still running.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to exit. It does nothing if
// the process is not running.
func (n *Node) Kill() {
	if !n.sendSignal(syscall.SIGKILL) {
		return
	}
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	<-done
}

// Term sends SIGTERM (graceful shutdown) and returns at once; see Wait.
func (n *Node) Term() { n.sendSignal(syscall.SIGTERM) }

func (n *Node) sendSignal(sig syscall.Signal) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
	}
	n.signal = time.Now()
	_ = n.cmd.Process.Signal(sig)
	return true
}

// ErrTimeout is returned by Wait when the process is still running.
var ErrTimeout = errors.New("testnode: the node did not exit in time")

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 if a signal killed it) and how long it took since the last Term
// or Kill (or since Wait was called, if none was sent).
func (n *Node) Wait(timeout time.Duration) (code int, took time.Duration, err error) {
	start := time.Now()
	n.mu.Lock()
	done, since := n.done, n.signal
	n.mu.Unlock()
	if since.IsZero() {
		since = start
	}
	if done == nil {
		return 0, 0, errors.New("testnode: the node was never started")
	}
	select {
	case <-done:
		return n.exitCode(), time.Since(since), nil
	case <-time.After(timeout):
		return 0, time.Since(since), ErrTimeout
	}
}

// Ready returns the status code of GET /readyz (0 and the error if the
// request failed).
func (n *Node) Ready() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := n.Get(ctx, "/readyz")
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// Response is a read HTTP response.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       string
}

// Get fetches path from the node without following redirects and reads
// the whole body.
func (n *Node) Get(ctx context.Context, path string) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		return nil, err
	}
	return Do(req)
}

// Do sends req with a client that does not follow redirects and keeps no
// connections, and reads the whole body.
func Do(req *http.Request) (*Response, error) {
	c := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true},
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	return &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: buf.String()}, nil
}
