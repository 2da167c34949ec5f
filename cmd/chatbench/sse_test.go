package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestSmokeSSE runs the fallback transport's scenarios at a tiny size
// against a freshly built chatterpro: the fan-out ladder and the idle
// connections, each over websockets and over Server-Sent Events + POST,
// and checks that the SSE members got every message once and that the
// report puts the two side by side.
func TestSmokeSSE(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatterpro")
	build := exec.Command("go", "build", "-o", bin, "github.com/chatterpro/chatterpro/cmd/chatterpro")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chatterpro: %v\n%s", err, out)
	}
	md := filepath.Join(dir, "out.md")
	args := []string{"-scenario", "sse-fanout,sse-idle", "-server", bin, "-members", strconv.Itoa(smokeMembers), "-senders", "2", "-rate-start", "100",
		"-steps", "2", "-step", "1s", "-warmup", "500ms", "-p99-limit", "10s", "-settle", "200ms", "-drain", "2s", "-timeout", "80s",
		"-conns", "30", "-idle-room-size", "10", "-hold", "1s", "-md", md}
	cfg, _, _, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	results, err := run(context.Background(), cfg, args)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Scenario+" "+r.Target] = true
		transport := "websocket"
		if r.Target == targetOursSSE {
			transport = "sse"
		}
		if r.Params["transport"] != transport {
			t.Errorf("%s %s: transport %v, want %s", r.Scenario, r.Target, r.Params["transport"], transport)
		}
		switch r.Scenario {
		case scenarioSSEFanout:
			if len(r.Steps) != 2 {
				t.Errorf("%s: %d steps, want 2", r.Target, len(r.Steps))
			}
			for i, st := range r.Steps {
				if !st.Pass || st.Lost != 0 || st.Dups != 0 || st.Deliveries != st.Sent*smokeMembers || st.Sent == 0 || st.Closed != 0 {
					t.Errorf("%s step %d: %+v, want every message delivered to all %d once", r.Target, i+1, st, smokeMembers)
				}
			}
		case scenarioSSEIdle:
			if r.Metrics["conns"] != 30 || r.Metrics["failed"] != 0 || r.Metrics["rss_after_mib"] <= 0 {
				t.Errorf("%s idle: %v, want 30 connections held, none failed, the server's memory read", r.Target, r.Metrics)
			}
		}
	}
	for _, want := range []string{scenarioSSEFanout + " " + targetOurs, scenarioSSEFanout + " " + targetOursSSE,
		scenarioSSEIdle + " " + targetOurs, scenarioSSEIdle + " " + targetOursSSE} {
		if !seen[want] {
			t.Errorf("no result for %s; got %v", want, seen)
		}
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	mdContains(t, string(b), "## sse-fanout", "## sse-idle", "| metric | chatterpro-sse | chatterpro | chatterpro-sse / chatterpro |",
		"| cpu_us_per_delivery_same_rate |", "| rss_kib_per_conn |", "Ladder of chatterpro-sse")
}
