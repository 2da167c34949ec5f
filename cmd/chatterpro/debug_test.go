package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/harness"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// --debug-addr serves the profiler on its own address, and the chat's
// address does not serve it.
func TestDebugAddrServesProfiler(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	debug := "127.0.0.1:" + strconv.Itoa(port)
	n := testnode.Start(t, testnode.Options{Args: []string{"--debug-addr", debug}})
	get := func(url string) (int, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		code, body, err := get("http://" + debug + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			return err
		}
		if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
			return fmt.Errorf("status %d, body %.200q", code, body)
		}
		return nil
	}, "the goroutine profile on --debug-addr")
	// The mutex profile is on: it names its sampling period.
	code, body, err := get("http://" + debug + "/debug/pprof/mutex?debug=1")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "sampling period="+strconv.Itoa(mutexSampling)) {
		t.Errorf("mutex profile: status %d, %v, body %.200q; want its sampling period %d", code, err, body, mutexSampling)
	}
	code, _, err = get(n.URL() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	if code == http.StatusOK {
		t.Errorf("the chat's address serves the profiler (status %d)", code)
	}
}

// A --debug-addr already taken stops the server with an error naming it.
func TestDebugAddrTaken(t *testing.T) {
	n := testnode.Start(t, testnode.Options{})
	err := run(context.Background(), []string{"--addr", "127.0.0.1:0", "--secret", testnode.DefaultSecret, "--debug-addr", n.Addr()}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--debug-addr "+n.Addr()) {
		t.Fatalf("run = %v; want an error naming --debug-addr %s", err, n.Addr())
	}
}
