package main

import (
	"fmt"
	"strings"
)

// The resolution of the latency view. A set that runs both the fanout and
// the crossnode scenario measures one centrifuge server (one node on its
// Redis broker) twice: a ladder in each. The ratios of those two ladders,
// taken run by run exactly as ChatterPro's against centrifuge's, are how
// far two measurements of one server fall apart on this machine: a
// per-step ratio of ChatterPro within them tells the two servers apart no
// better than it tells centrifuge from itself.

const (
	// selfScenario and targetSelf name the two ladders of centrifuge
	// within the comparison: its crossnode ladder as targetSelf, over its
	// fanout ladder as targetCentrifuge.
	selfScenario = "self"
	targetSelf   = "centrifuge-again"
	// The per-step bounds of the latency targets.
	stepBoundP50, stepBoundP99 = 1.15, 1.3
)

// resolutionView is centrifuge against itself, with how many of the steps
// both ladders passed in a run had a ratio over the per-step bounds.
type resolutionView struct {
	ladderCompare
	StepsCompared int `json:"steps_compared"`
	P50Over       int `json:"p50_steps_over_bound"`
	P99Over       int `json:"p99_steps_over_bound"`
}

// resolution compares centrifuge's crossnode ladders with its fanout
// ladders of the same runs; nil unless both scenarios ran it.
func resolution(results []*result) *resolutionView {
	var rs []*result
	for _, r := range results {
		if r.Target != targetCentrifuge || len(r.Steps) == 0 {
			continue
		}
		c := *r
		switch r.Scenario {
		case "fanout":
		case "crossnode":
			c.Target = targetSelf
		default:
			continue
		}
		c.Scenario = selfScenario
		rs = append(rs, &c)
	}
	lc, ok := compareSetup(rs, ladderSetup{scenario: selfScenario, setup: "centrifuge against itself",
		ours: targetSelf, anchor: targetCentrifuge})
	if !ok || len(lc.P50GeoMeans) == 0 {
		return nil
	}
	v := &resolutionView{ladderCompare: lc}
	ladders := laddersOf(rs, selfScenario, func(string) bool { return true })
	for run, again := range ladders[targetSelf] {
		for rate, a := range again {
			b, ok := ladders[targetCentrifuge][run][rate]
			if !ok || !a.Pass || !b.Pass || b.P50ms <= 0 || b.P99ms <= 0 {
				continue
			}
			v.StepsCompared++
			if a.P50ms/b.P50ms > stepBoundP50 || b.P50ms/a.P50ms > stepBoundP50 {
				v.P50Over++
			}
			if a.P99ms/b.P99ms > stepBoundP99 || b.P99ms/a.P99ms > stepBoundP99 {
				v.P99Over++
			}
		}
	}
	return v
}

// markdown renders the resolution under the latency view.
func (v *resolutionView) markdown(b *strings.Builder) {
	b.WriteString("### Resolution: centrifuge against itself\n\n")
	fmt.Fprintf(b, "The same centrifuge server ran a ladder in the fanout and in the crossnode scenario of this set. "+
		"Its crossnode ladder over its fanout ladder, run by run, computed as the ratios above: "+
		"p50 %.2f (runs: %s; worst step %.2f), p99 %.2f (runs: %s; worst step %.2f). "+
		"Of the %d steps both ladders of a run passed, %d differed by more than %.2f times in p50 and %d by more than %.1f times in p99, either way.\n\n",
		v.P50GeoMean, joinRatios(v.P50GeoMeans), v.P50Worst, v.P99GeoMean, joinRatios(v.P99GeoMeans), v.P99Worst,
		v.StepsCompared, v.P50Over, stepBoundP50, v.P99Over, stepBoundP99)
	b.WriteString("| msgs/s | p50 ratio | p99 ratio |\n|---|---|---|\n")
	for _, cs := range v.Steps {
		if cs.P50Ratio == 0 {
			continue
		}
		fmt.Fprintf(b, "| %.0f | %.2f | %.2f |\n", cs.MsgsPerSec, cs.P50Ratio, cs.P99Ratio)
	}
	b.WriteString("\n")
}
