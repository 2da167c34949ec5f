package main

import (
	"strings"
	"testing"
)

// TestResolution checks centrifuge against itself: its crossnode ladder
// over its fanout ladder, run by run, and the steps over the bounds.
func TestResolution(t *testing.T) {
	ladder := func(scenario string, run int, p50s, p99s []float64) *result {
		r := &result{Scenario: scenario, Target: targetCentrifuge, Run: run}
		rate := 10.0
		for i := range p50s {
			r.Steps = append(r.Steps, step{MsgsPerSec: rate, P50ms: p50s[i], P99ms: p99s[i], Pass: true, CPUusPerDel: 1, DeliveriesPerS: rate * 100, Cores: 0.1})
			rate *= 2
		}
		r.Metrics = fanoutMetrics(r.Steps)
		return r
	}
	fanoutOnly := []*result{ladder("fanout", 1, []float64{2, 2}, []float64{4, 4})}
	if v := resolution(fanoutOnly); v != nil {
		t.Fatalf("resolution from the fanout scenario alone: %+v, want none", v)
	}
	results := []*result{
		// Run 1: the crossnode ladder twice as slow in p50 at 10 msgs/s
		// (over 1.15), 1.1 times at 20 (within), p99 the same.
		ladder("fanout", 1, []float64{2, 10}, []float64{4, 10}),
		ladder("crossnode", 1, []float64{4, 11}, []float64{4, 10}),
		// Run 2: half as slow in p99 at 10 (over 1.3 the other way).
		ladder("fanout", 2, []float64{2, 10}, []float64{4, 10}),
		ladder("crossnode", 2, []float64{2, 10}, []float64{2, 10}),
		// ChatterPro's ladders do not take part.
		{Scenario: "fanout", Target: targetOurs, Run: 1, Steps: []step{{MsgsPerSec: 10, P50ms: 100, P99ms: 100, Pass: true}}},
	}
	v := resolution(results)
	if v == nil {
		t.Fatal("no resolution from both scenarios")
	}
	if v.StepsCompared != 4 || v.P50Over != 1 || v.P99Over != 1 {
		t.Errorf("steps %d, p50 over %d, p99 over %d; want 4, 1, 1", v.StepsCompared, v.P50Over, v.P99Over)
	}
	if v.Runs != 2 || v.P50Worst != 1.5 || v.P99Worst != 1 {
		t.Errorf("runs %d, worst step p50 %v p99 %v; want 2, 1.5 (at 10: median of 2 and 1), 1 (at 20)", v.Runs, v.P50Worst, v.P99Worst)
	}
	rep := newReport("test", 2, results)
	md := rep.markdown("")
	mdContains(t, md,
		"### Resolution: centrifuge against itself",
		"The same centrifuge server measured twice in this set (its crossnode ladder over its fanout ladder; \"Resolution\" in the latency view): p50 1.24 (worst step 1.50), p99 0.85 (worst step 1.00).",
		"Of the 4 steps both ladders of a run passed, 1 differed by more than 1.15 times in p50 and 1 by more than 1.3 times in p99",
		"| 10 | 1.50 | 0.75 |",
		"| 20 | 1.05 | 1.00 |")
	for _, vd := range rep.Verdicts {
		if strings.Contains(vd.Target, targetSelf) || strings.Contains(vd.Detail, targetSelf) {
			t.Errorf("a verdict names the self comparison: %+v", vd)
		}
	}
}
