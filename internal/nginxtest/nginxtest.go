// Package nginxtest runs a real nginx for tests: the shipped
// deploy/nginx.conf, in the foreground, on a free 127.0.0.1 port, with
// every file (pid, logs, temp directories) in the test's temporary
// directory, proxying to the upstream addresses the test gives. It works
// whether the tests run as root or not.
//
// The configuration is the shipped file with only the upstream server
// addresses, the listen address, the worker count and file paths replaced
// (see Config), so the tests check what operators run.
//
// A missing nginx fails the test; it is never skipped.
package nginxtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/deploy"
	"github.com/chatterpro/chatterpro/internal/harness"
)

// Options configures an nginx started by StartOpts. The zero value is
// fine for Start's defaults.
type Options struct {
	// Workers sets worker_processes. Defaults to 2.
	Workers int
	// Port is the port to listen on. Defaults to a free one.
	Port int
	// Conf is the configuration to run, rewritten as the shipped one is
	// (see Config), for a test of nginx's defaults. Defaults to
	// deploy/nginx.conf.
	Conf string
}

// Nginx is one running nginx (its master process and workers).
type Nginx struct {
	dir  string
	port int
	conf string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done <-chan struct{}
	out  *harness.Log
}

// startTimeout bounds how long Start waits for nginx to accept connections.
const startTimeout = 10 * time.Second

// Start starts nginx with deploy/nginx.conf proxying to upstreams
// ("127.0.0.1:port" each) and waits until it accepts connections. It is
// stopped when the test ends. It fails the test, with nginx's error log,
// if nginx is missing or does not start.
func Start(t testing.TB, upstreams ...string) *Nginx {
	t.Helper()
	return StartOpts(t, Options{}, upstreams...)
}

// StartOpts is Start with options.
func StartOpts(t testing.TB, opts Options, upstreams ...string) *Nginx {
	t.Helper()
	if len(upstreams) == 0 {
		t.Fatal("nginxtest: no upstream addresses")
	}
	bin := Binary(t)
	n := &Nginx{dir: t.TempDir()}
	t.Cleanup(n.Stop)
	var err error
	for attempt := 0; attempt < 5; attempt++ { // a free port may be taken before nginx binds it
		n.port = opts.Port
		if n.port == 0 {
			if n.port, err = harness.FreePort(); err != nil {
				t.Fatalf("nginxtest: finding a free port: %v", err)
			}
		}
		conf := opts.Conf
		if conf == "" {
			conf = deploy.NginxConf()
		}
		n.conf, err = Config(conf, ConfigParams{
			Listen:    n.Addr(),
			Upstreams: upstreams,
			Dir:       n.dir,
			Workers:   opts.Workers,
			Root:      os.Geteuid() == 0,
		})
		if err != nil {
			t.Fatalf("nginxtest: %v", err)
		}
		if err = n.start(bin); err == nil {
			return n
		}
		if opts.Port != 0 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("nginxtest: %v\n--- nginx.conf ---\n%s", err, n.conf)
	return nil
}

// Binary returns the path of nginx (from PATH or /usr/sbin/nginx), failing
// the test if it is missing.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := LookPath()
	if err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	return p
}

// LookPath finds nginx in PATH or at /usr/sbin/nginx.
func LookPath() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	const fallback = "/usr/sbin/nginx"
	if _, err := os.Stat(fallback); err == nil {
		return fallback, nil
	}
	return "", fmt.Errorf("nginx not found in PATH or at %s; install it (Debian package nginx)", fallback)
}

func (n *Nginx) start(bin string) error {
	confPath := filepath.Join(n.dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(n.conf), 0o644); err != nil {
		return err
	}
	_ = os.Remove(n.ErrorLogPath())
	cmd := exec.Command(bin, "-p", n.dir+"/", "-e", n.ErrorLogPath(), "-c", confPath, "-g", "daemon off;")
	cmd.Dir = n.dir
	out := &harness.Log{}
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group, so that Stop ends the workers too; killed with
	// the test binary if that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	done, err := harness.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	n.mu.Lock()
	n.cmd, n.done, n.out = cmd, done, out
	n.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", n.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("nginx exited at start: %s%s", out.String(), n.ErrorLog())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.Stop()
			return fmt.Errorf("nginx did not accept connections on %s within %v: %s", n.Addr(), startTimeout, n.ErrorLog())
		}
	}
}

// Addr returns the address nginx listens on, "127.0.0.1:port".
func (n *Nginx) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// URL returns "http://127.0.0.1:port".
func (n *Nginx) URL() string { return "http://" + n.Addr() }

// Dir returns nginx's prefix directory (configuration, logs, temp files).
func (n *Nginx) Dir() string { return n.dir }

// Conf returns the configuration nginx runs with.
func (n *Nginx) Conf() string { return n.conf }

// ErrorLogPath returns the path of nginx's error log.
func (n *Nginx) ErrorLogPath() string { return filepath.Join(n.dir, "error.log") }

// ErrorLog returns the error log so far.
func (n *Nginx) ErrorLog() string {
	b, _ := os.ReadFile(n.ErrorLogPath())
	return string(b)
}

// AccessLog returns the access log so far.
func (n *Nginx) AccessLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	return string(b)
}

// Stop stops nginx (SIGTERM to the master, then SIGKILL to its whole
// process group after 5 s) and waits for it. It is registered with
// t.Cleanup and safe to call more than once.
func (n *Nginx) Stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	// Workers that outlived their master (they should not) go too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// ConfigParams says what Config puts into the shipped configuration.
type ConfigParams struct {
	// Listen is the listen address, "127.0.0.1:port". Required.
	Listen string
	// Upstreams are the nodes' addresses. At least one is required.
	Upstreams []string
	// Dir is the directory for the pid file, logs and temp directories.
	// Required.
	Dir string
	// Workers sets worker_processes. Defaults to 2.
	Workers int
	// Root adds "user root;" so that workers of an nginx started as root
	// can use files in Dir (a test's temporary directories are not
	// readable by nginx's default worker user). Defaults to false.
	Root bool
}

// ErrConfig says the shipped configuration no longer has the shape Config
// rewrites.
var ErrConfig = errors.New("nginxtest: unexpected deploy/nginx.conf")

var (
	pathDirective     = regexp.MustCompile(`^\s*(pid|error_log|access_log|user|client_body_temp_path|proxy_temp_path|fastcgi_temp_path|uwsgi_temp_path|scgi_temp_path)\s[^;]*;\s*(#.*)?$`)
	workersDirective  = regexp.MustCompile(`^\s*worker_processes\s[^;]*;\s*$`)
	upstreamServer    = regexp.MustCompile(`^(\s*)server\s+(\S+)((?:\s+[^;]*)?);\s*$`)
	listenDirective   = regexp.MustCompile(`^(\s*)listen\s+[^;]+;\s*$`)
	upstreamBlock     = regexp.MustCompile(`^\s*upstream\s+\S+\s*\{\s*$`)
	httpBlock         = regexp.MustCompile(`^\s*http\s*\{\s*$`)
	closingBraceOnly  = regexp.MustCompile(`^\s*\}\s*$`)
	workersDefaultNum = 2
)

// Config rewrites the shipped configuration conf for a test: the server
// lines of its upstream block become one per p.Upstreams (keeping the
// first line's parameters such as max_fails), every listen directive
// becomes p.Listen, worker_processes becomes p.Workers, and the pid file,
// logs and temp directories move into p.Dir. Everything else is kept as
// shipped. It returns ErrConfig if conf lacks an upstream block, a listen
// directive or an http block.
func Config(conf string, p ConfigParams) (string, error) {
	if p.Listen == "" || p.Dir == "" || len(p.Upstreams) == 0 {
		return "", errors.New("nginxtest: Config needs Listen, Dir and Upstreams")
	}
	workers := p.Workers
	if workers <= 0 {
		workers = workersDefaultNum
	}
	dir := strings.TrimSuffix(p.Dir, "/")
	var out []string
	out = append(out, "# generated by nginxtest from deploy/nginx.conf")
	if p.Root {
		out = append(out, "user root;")
	}
	out = append(out,
		"pid "+dir+"/nginx.pid;",
		"error_log "+dir+"/error.log info;",
	)
	var inUpstream, sawUpstream, sawServer, sawListen, sawHTTP bool
	for _, line := range strings.Split(conf, "\n") {
		switch {
		case pathDirective.MatchString(line):
			continue
		case workersDirective.MatchString(line):
			out = append(out, "worker_processes "+strconv.Itoa(workers)+";")
			continue
		case httpBlock.MatchString(line):
			sawHTTP = true
			out = append(out, line,
				"    access_log "+dir+"/access.log;",
				"    client_body_temp_path "+dir+"/client_body_temp;",
				"    proxy_temp_path "+dir+"/proxy_temp;",
				"    fastcgi_temp_path "+dir+"/fastcgi_temp;",
				"    uwsgi_temp_path "+dir+"/uwsgi_temp;",
				"    scgi_temp_path "+dir+"/scgi_temp;",
			)
			continue
		case upstreamBlock.MatchString(line):
			inUpstream, sawUpstream = true, true
		case inUpstream && closingBraceOnly.MatchString(line):
			inUpstream = false
		case inUpstream && upstreamServer.MatchString(line):
			if sawServer {
				continue
			}
			sawServer = true
			m := upstreamServer.FindStringSubmatch(line)
			for _, u := range p.Upstreams {
				out = append(out, m[1]+"server "+u+m[3]+";")
			}
			continue
		case listenDirective.MatchString(line):
			sawListen = true
			m := listenDirective.FindStringSubmatch(line)
			out = append(out, m[1]+"listen "+p.Listen+";")
			continue
		}
		out = append(out, line)
	}
	if !sawHTTP || !sawUpstream || !sawServer || !sawListen {
		return "", fmt.Errorf("%w: it needs an http block, an upstream block with server lines and a listen directive, each on lines of their own", ErrConfig)
	}
	return strings.Join(out, "\n"), nil
}
