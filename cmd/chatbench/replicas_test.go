package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSmokeReplicas runs the replicas scenario tiny against a fresh build:
// both targets (one node on a primary with a replica, --redis-replicas 0
// and 1) deliver every message to every member of its room once, every
// sender's own copy comes back and is measured apart, the node with 1 WAITs
// and the one with 0 does not, and the report has the N=1 / N=0 table.
func TestSmokeReplicas(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatterpro")
	build := exec.Command("go", "build", "-o", bin, "github.com/chatterpro/chatterpro/cmd/chatterpro")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chatterpro: %v\n%s", err, out)
	}
	const rooms, size = 5, 3
	md := filepath.Join(dir, "out.md")
	cfg, _, _, err := parseFlags([]string{"-scenario", scenarioReplicas, "-server", bin, "-replica-rooms", "5", "-room-size", "3",
		"-duration", "2s", "-warmup", "500ms", "-settle", "200ms", "-drain", "3s", "-timeout", "60s",
		"-json", filepath.Join(dir, "out.json"), "-md", md})
	if err != nil {
		t.Fatal(err)
	}
	results, err := run(context.Background(), cfg, []string{"-scenario", scenarioReplicas})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Target] = true
		m := r.Metrics
		if r.Error != "" || r.Scenario != scenarioReplicas {
			t.Errorf("%s: scenario %q, error %q", r.Target, r.Scenario, r.Error)
			continue
		}
		// 1 message/s per member for 2 s: a couple per sender.
		if m["sent"] < rooms*size || m["lost"] != 0 || m["dups"] != 0 || m["error_frames"] != 0 || m["closed_conns"] != 0 ||
			m["deliveries"] != m["sent"]*size {
			t.Errorf("%s: %v, want every message delivered to all %d members of its room once", r.Target, m, size)
		}
		// Own copies after the warm-up: at least one per sender.
		if m["acks"] < rooms*size || m["ack_p50_ms"] <= 0 || m["ack_p999_ms"] < m["ack_p50_ms"] ||
			m["p50_ms"] <= 0 || m["p999_ms"] < m["p50_ms"] {
			t.Errorf("%s: %v, want latencies of acknowledgements and of deliveries to the others", r.Target, m)
		}
		replicas, waits := r.Params["redis_replicas"], m["redis_wait_calls"]
		switch r.Target {
		case targetOursReplicas0:
			if replicas != 0 || waits != 0 {
				t.Errorf("%s: --redis-replicas %v, %v WAIT calls; want 0 and none", r.Target, replicas, waits)
			}
		case targetOursReplicas1:
			if replicas != 1 || waits < 1 {
				t.Errorf("%s: --redis-replicas %v, %v WAIT calls; want 1 and some", r.Target, replicas, waits)
			}
		}
	}
	if len(results) != 2 || !seen[targetOursReplicas0] || !seen[targetOursReplicas1] {
		t.Fatalf("targets run: %v, want %s and %s", seen, targetOursReplicas0, targetOursReplicas1)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	mdContains(t, string(b), "## replicas", "redis=a primary and one replica",
		"| metric | chatterpro-replicas-1 | chatterpro-replicas-0 | chatterpro-replicas-1 / chatterpro-replicas-0 | all runs |",
		"| ack_p99_ms |", "| redis_wait_calls |")
}
