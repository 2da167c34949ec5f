package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmokeCentrifuge builds the centrifuge anchor the way chatbench does
// and runs it through the scenarios at a tiny size: one node and two
// nodes on Redis in one room, and a few rooms. Every message reaches every
// member once.
func TestSmokeCentrifuge(t *testing.T) {
	const members, rooms, roomSize = 5, 2, 3
	dir := t.TempDir()
	cfg, _, _, err := parseFlags([]string{"-scenario", "fanout,crossnode,rooms", "-target", "centrifuge",
		"-members", "5", "-senders", "2", "-rate-start", "20", "-steps", "1", "-step", "1s", "-warmup", "0s",
		"-p99-limit", "10s", "-settle", "200ms", "-drain", "3s", "-rooms", "2", "-room-size", "3", "-duration", "1s",
		"-timeout", "2m", "-md", filepath.Join(dir, "out.md")})
	if err != nil {
		t.Fatal(err)
	}
	results, err := run(context.Background(), cfg, []string{"-target", "centrifuge"})
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, r := range results {
		ran = append(ran, r.Scenario+" "+r.Target)
		if r.Error != "" {
			t.Errorf("%s %s: %s", r.Scenario, r.Target, r.Error)
			continue
		}
		if r.Scenario == "rooms" {
			sent, got := r.Metrics["sent"], r.Metrics["deliveries"]
			if sent == 0 || got != sent*roomSize || r.Metrics["lost"] != 0 || r.Metrics["dups"] != 0 || r.Metrics["error_frames"] != 0 {
				t.Errorf("rooms %s: %v, want every message delivered to all %d members once", r.Target, r.Metrics, roomSize)
			}
			continue
		}
		if len(r.Steps) != 1 {
			t.Errorf("%s %s: %d steps, want 1", r.Scenario, r.Target, len(r.Steps))
			continue
		}
		st := r.Steps[0]
		if !st.Pass || st.Sent == 0 || st.Deliveries != st.Sent*members || st.Lost != 0 || st.Dups != 0 || st.Errors != 0 || st.P50ms <= 0 {
			t.Errorf("%s %s: %+v, want every message delivered to all %d members once", r.Scenario, r.Target, st, members)
		}
		if nodes := map[string]int{targetCentrifuge: 1, targetCentrifuge2: 2}[r.Target]; r.Params["nodes"] != nodes || r.Params["layer"] != "redis" {
			t.Errorf("%s %s: %v nodes on %v, want %d on redis", r.Scenario, r.Target, r.Params["nodes"], r.Params["layer"], nodes)
		}
	}
	want := []string{"fanout centrifuge", "crossnode centrifuge", "crossnode centrifuge-2nodes", "rooms centrifuge"}
	if !slices.Equal(ran, want) {
		t.Errorf("ran %q, want %q", ran, want)
	}
	md, err := os.ReadFile(filepath.Join(dir, "out.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "Ladder of centrifuge-2nodes, run 1") {
		t.Errorf("markdown lacks the two-node ladder:\n%s", md)
	}
}

// A frame of centrifuge's JSON protocol holds one reply or push per line:
// publications are measured like ChatterPro's messages, error replies and
// disconnect pushes counted, publish replies ignored.
func TestHandleCentrifuge(t *testing.T) {
	at := time.Unix(1700000000, 0)
	c := &client{tr: newTracker(), centrifuge: true, pubPrefix: []byte(`,"publish":{"channel":"r","data":{"text":"cb `)}
	pub := c.centrifugeFrame(nil, 3, 0, at)
	if want := `{"id":1,"publish":{"channel":"r","data":{"text":"cb 3 0 1700000000000000000"}}}`; string(pub) != want {
		t.Fatalf("publish command %s, want %s", pub, want)
	}
	push := func(seq string) string {
		return `{"push":{"channel":"r","pub":{"data":{"text":"cb 3 ` + seq + ` 1700000000000000000"}}}}`
	}
	frame := strings.Join([]string{push("0"), `{"id":7,"publish":{}}`, push("1"), push("1"),
		`{"id":8,"error":{"code":103,"message":"permission denied"}}`, `{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}`}, "\n")
	c.handleCentrifuge([]byte(frame), at.Add(2*time.Millisecond))
	tr, h, errs, first := c.take()
	if tr.recv != 3 || tr.dups != 1 || tr.unique(map[uint32]uint32{3: 2}) != 2 || h.n != 2 || errs != 2 {
		t.Errorf("recv %d dups %d unique %d latencies %d errors %d, want 3 1 2 2 2", tr.recv, tr.dups, tr.unique(map[uint32]uint32{3: 2}), h.n, errs)
	}
	if got := h.quantile(1); got < 1900*time.Microsecond || got > 2*time.Millisecond {
		t.Errorf("latency %v, want about 2ms", got)
	}
	if !strings.Contains(first, "permission denied") {
		t.Errorf("first error %q, want the error reply", first)
	}
}

// The latency view compares the ladders step by step, within each run:
// per-step ratios are medians over runs, the geometric mean is taken per
// run over the steps both passed, and CPU per delivery at the highest rate
// both passed.
func TestLatencyView(t *testing.T) {
	ladder := func(target string, run int, p50s []float64, pass []bool, cpu float64) *result {
		r := &result{Scenario: "fanout", Target: target, Run: run}
		rate := 10.0
		for i, p := range p50s {
			r.Steps = append(r.Steps, step{MsgsPerSec: rate, P50ms: p, P99ms: 2 * p, Pass: pass[i], CPUusPerDel: cpu, LoadgenCores: cpu / 10, DeliveriesPerS: rate * 100, Cores: 0.1})
			rate *= 2
		}
		r.Metrics = fanoutMetrics(r.Steps)
		return r
	}
	yes := []bool{true, true, true}
	results := []*result{
		// Run 1: equal on the two steps both passed; centrifuge fails the third.
		ladder(targetOurs, 1, []float64{2, 2, 4}, yes, 1),
		ladder(targetBare, 1, []float64{3, 3, 3}, yes, 5),
		ladder(targetCentrifuge, 1, []float64{2, 2, 2}, []bool{true, true, false}, 4),
		// Run 2: half as slow, then twice: a geometric mean of 1.
		ladder(targetOurs, 2, []float64{1, 4}, yes, 1),
		ladder(targetBare, 2, []float64{3, 3}, yes, 5),
		ladder(targetCentrifuge, 2, []float64{2, 2}, yes, 4),
		{Scenario: "rooms", Target: targetOursRedis, Run: 1, Metrics: map[string]float64{"p50_ms": 1, "p99_ms": 3, "lost": 0, "dups": 0}},
		{Scenario: "rooms", Target: targetCentrifuge, Run: 1, Metrics: map[string]float64{"p50_ms": 1, "p99_ms": 4, "lost": 0, "dups": 0}},
	}
	rep := newReport("test", 2, results)
	if len(rep.Latency) != 1 {
		t.Fatalf("%d ladder comparisons, want 1 (fan-out on memory)", len(rep.Latency))
	}
	lc := rep.Latency[0]
	if lc.P50GeoMean != 1 || lc.P99GeoMean != 1 || lc.P50Worst != 1.5 || lc.P99Worst != 1.5 {
		t.Errorf("geometric means %v %v, worst steps %v %v; want 1 1 1.5 1.5", lc.P50GeoMean, lc.P99GeoMean, lc.P50Worst, lc.P99Worst)
	}
	if lc.CPURatio != 0.25 || !slices.Equal(lc.CommonRates, []float64{20, 20}) || !lc.complete() {
		t.Errorf("CPU ratio %v at %v (complete %v), want 0.25 at 20 msgs/s in both runs", lc.CPURatio, lc.CommonRates, lc.complete())
	}
	got := map[string]bool{}
	for _, v := range rep.Verdicts {
		got[v.Target] = v.Met
	}
	for name, want := range map[string]bool{
		"fan-out vs centrifuge, one node, ChatterPro on the memory layer: p50 geometric mean of per-step ratios <= 1.0 (every step <= 1.15), p99 <= 1.1 (every step <= 1.3)": false,
		"fan-out vs centrifuge, one node, ChatterPro on the memory layer: CPU per delivery <= 0.5x centrifuge's at the highest rate both passed":                             true,
		"many rooms on Redis: p99 <= centrifuge's, nothing lost or duplicated":                                                                                               true,
	} {
		if m, ok := got[name]; !ok || m != want {
			t.Errorf("verdict %q: met %v (present %v), want %v", name, m, ok, want)
		}
	}
	md := rep.markdown("")
	mdContains(t, md,
		"| metric | chatterpro | bare | chatterpro / bare | centrifuge | chatterpro / centrifuge | all runs |",
		"| cpu_us_per_delivery_same_rate | 1.00 | 5.00 | 0.20 | 4.00 | 0.25 |",
		"| msgs/s | chatterpro p50 | chatterpro p99 | centrifuge p50 | centrifuge p99 | p50 ratio | p99 ratio | bare p50 | bare p99 | chatbench cores (chatterpro / centrifuge / bare) |",
		"| 10 | 1.50 | 3.00 | 2.00 | 4.00 | 0.75 | 0.75 | 3.00 | 6.00 | 0.10 / 0.40 / 0.50 |",
		"| 40 | 4.00 | 8.00 | fail | fail | — | — | 3.00 | 6.00 | 0.10 / 0.40 / 0.50 |",
		"chatterpro-redis / centrifuge: p50 1.00, p99 0.75")
}
