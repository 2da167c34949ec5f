// Package leakcheck fails a test binary whose tests leave goroutines behind.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then waits up to five seconds for every goroutine the
// tests started to end. If some remain it prints their stacks and exits 1.
// Call it from TestMain: func TestMain(m *testing.M) { leakcheck.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := Wait(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines outlived the tests:\n\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Wait waits up to d for all goroutines other than the runtime's, the test
// framework's and this one to end; it returns the stacks of those left.
func Wait(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		left := interesting()
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func interesting() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if isIgnored(g) {
			continue
		}
		out = append(out, g)
	}
	return out
}

// ignored are goroutines that are not the tests': the runtime's, the test
// framework's, os/signal's, and idle keep-alive connections of HTTP clients.
var ignored = []string{
	"leakcheck.interesting",
	"testing.(*M).",
	"testing.tRunner",
	"os/signal.signal_recv",
	"net/http.(*persistConn)",
}

func isIgnored(stack string) bool {
	for _, s := range ignored {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return false
}
