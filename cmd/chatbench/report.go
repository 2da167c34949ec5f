package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// notesMarker starts a hand-written section of the Markdown file that
// chatbench keeps when it rewrites the file.
const notesMarker = "<!-- notes: everything below this line is kept by chatbench -->"

type machine struct {
	NProc     int    `json:"nproc"`
	Model     string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	// FileLimit is the hard limit on open files (RLIMIT_NOFILE) of
	// chatbench and of the servers it starts: no process here can hold
	// more connections than that.
	FileLimit uint64 `json:"file_limit"`
}

type summary struct {
	Scenario string             `json:"scenario"`
	Metric   string             `json:"metric"`
	Medians  map[string]float64 `json:"medians"`
	Ratio    float64            `json:"ratio"` // median of per-run ratios; 0 if none
	Ratios   []float64          `json:"ratios,omitempty"`
	// Complete is set when every run of the scenario had both figures.
	Complete bool                 `json:"complete"`
	RatioOf  string               `json:"ratio_of,omitempty"`
	Values   map[string][]float64 `json:"values"`
	// Anchors are ChatterPro's figures divided by centrifuge's (see
	// anchorPairs), run by run like Ratio.
	Anchors []anchorRatio `json:"anchor_ratios,omitempty"`
}

type verdict struct {
	Target string `json:"target"`
	Met    bool   `json:"met"`
	Detail string `json:"detail"`
}

type report struct {
	Command  string    `json:"command"`
	Runs     int       `json:"runs"`
	Date     string    `json:"date"`
	Machine  machine   `json:"machine"`
	Results  []*result `json:"results"`
	Summary  []summary `json:"summary"`
	Verdicts []verdict `json:"verdicts"`
	runs     int

	// Latency compares ChatterPro's fan-out ladders with centrifuge's,
	// step by step (see anchors.go).
	Latency []ladderCompare `json:"latency,omitempty"`
	// Resolution is centrifuge against itself (see resolution.go).
	Resolution *resolutionView `json:"resolution,omitempty"`
}

func readMachine() machine {
	m := machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		m.FileLimit = lim.Max
	}
	return m
}

// keyMetrics are the metrics summarized per scenario, in table order.
var keyMetrics = map[string][]string{
	"fanout":    {"max_deliveries_per_s", "max_msgs_per_s", "p99_ms_at_max", "server_cores_at_max", "cpu_us_per_delivery_at_max", "same_rate_msgs_per_s", "cpu_us_per_delivery_same_rate", "deliveries_per_s_per_core", "p50_ms_same_rate", "p99_ms_same_rate", "loadgen_cores_same_rate"},
	"crossnode": {"same_rate_msgs_per_s", "cpu_us_per_delivery_same_rate", "deliveries_per_s_per_core_same_rate", "redis_cores_same_rate", "max_deliveries_per_s", "max_msgs_per_s", "p99_ms_at_max", "server_cores_at_max", "deliveries_per_s_per_core", "p50_ms_same_rate", "p99_ms_same_rate", "loadgen_cores_same_rate"},
	"rooms":     {"deliveries_per_s", "p50_ms", "p99_ms", "p999_ms", "lost", "dups", "closed_conns", "cpu_us_per_delivery", "server_cores", "loadgen_cores"},
	"idle":      {"conns", "failed", "rss_kib_per_conn", "rss_kib_per_conn_at_connect", "rss_after_mib", "connect_s"},
	"connect":   {"conns_per_s", "p50_ms", "p99_ms", "cpu_us_per_conn"},
	// --redis-replicas 1 against 0 (see replicas.go): p50_ms... are the
	// deliveries to the other members, ack_* the sender's own copy.
	scenarioReplicas: {"p50_ms", "p99_ms", "p999_ms", "ack_p50_ms", "ack_p99_ms", "ack_p999_ms", "deliveries_per_s", "lost", "dups", "error_frames", "closed_conns", "cpu_us_per_delivery", "server_cores", "redis_cores", "redis_wait_calls"},
	// The fallback transport beside websockets (see sse.go).
	scenarioSSEFanout: {"same_rate_msgs_per_s", "cpu_us_per_delivery_same_rate", "deliveries_per_s_per_core_same_rate", "max_deliveries_per_s", "max_msgs_per_s", "p99_ms_at_max", "server_cores_at_max", "cpu_us_per_delivery_at_max"},
	scenarioSSEIdle:   {"conns", "failed", "rss_kib_per_conn", "rss_kib_per_conn_at_connect", "rss_after_mib", "connect_s"},
}

// ratioPair says which target is divided by which in a scenario.
func ratioPair(scenario string) (num, den string) {
	if scenario == "crossnode" {
		return targetOurs2, targetOurs
	}
	if isSSEScenario(scenario) {
		return targetOursSSE, targetOurs
	}
	if scenario == scenarioReplicas {
		return targetOursReplicas1, targetOursReplicas0
	}
	return targetOurs, targetBare
}

// extraTargets are shown beside the ratio's two, for information.
func extraTargets(scenario string) []string {
	switch scenario {
	case "crossnode":
		return []string{targetOursRedis, targetCentrifuge, targetCentrifuge2}
	case "fanout":
		return []string{targetCentrifuge, targetSocketIO}
	case "rooms":
		return []string{targetOursRedis, targetCentrifuge}
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// addSameRate gives both targets of a fan-out or cross-node run their
// figures at the highest rate both passed, so that they are compared at
// equal load: CPU per delivery costs less as the rate climbs (more frames
// go out per write), so figures taken at each ladder's own highest step
// would favour whichever ladder climbed further, and a ladder cut short
// by a noisy step would decide the ratio.
func addSameRate(results []*result) {
	type key struct {
		scenario string
		run      int
	}
	groups := map[key][]*result{}
	for _, r := range results {
		if (r.Scenario == "fanout" || r.Scenario == "crossnode" || r.Scenario == scenarioSSEFanout) && r.Metrics != nil {
			k := key{r.Scenario, r.Run}
			groups[k] = append(groups[k], r)
		}
	}
	for _, g := range groups {
		// The rate is the highest both targets of the ratio passed; a
		// target shown for information gets its figures there too, if it
		// passed that rate, but does not lower it.
		common, compared := -1, 0
		for _, r := range g {
			if slices.Contains(extraTargets(r.Scenario), r.Target) {
				continue
			}
			compared++
			p := int(r.Metrics["passed_steps"])
			if common < 0 || p < common {
				common = p
			}
		}
		if common <= 0 || compared < 2 {
			continue
		}
		for _, r := range g {
			if int(r.Metrics["passed_steps"]) < common {
				continue
			}
			st := r.Steps[common-1]
			r.Metrics["same_rate_msgs_per_s"] = st.MsgsPerSec
			r.Metrics["cpu_us_per_delivery_same_rate"] = st.CPUusPerDel
			r.Metrics["p50_ms_same_rate"], r.Metrics["p99_ms_same_rate"] = st.P50ms, st.P99ms
			r.Metrics["loadgen_cores_same_rate"] = st.LoadgenCores
			if st.Cores > 0 {
				r.Metrics["deliveries_per_s_per_core_same_rate"] = st.DeliveriesPerS / st.Cores
			}
			if r.Scenario == "crossnode" {
				r.Metrics["redis_cores_same_rate"] = st.RedisCores
			}
		}
	}
}

func buildReport(cfg *config, args []string, results []*result) *report {
	return newReport("chatbench "+strings.Join(args, " "), cfg.runs, results)
}

func newReport(command string, runs int, results []*result) *report {
	addSameRate(results)
	rep := &report{
		Command: command,
		Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Machine: readMachine(),
		Results: results,
		runs:    runs,
	}
	var scenarios []string
	for _, r := range results {
		if !slices.Contains(scenarios, r.Scenario) {
			scenarios = append(scenarios, r.Scenario)
		}
	}
	for _, s := range scenarios {
		num, den := ratioPair(s)
		for _, metric := range keyMetrics[s] {
			sm := summary{Scenario: s, Metric: metric, Medians: map[string]float64{}, Values: map[string][]float64{}, RatioOf: num + "/" + den}
			for _, r := range results {
				if v, ok := r.Metrics[metric]; ok && r.Scenario == s {
					sm.Values[r.Target] = append(sm.Values[r.Target], v)
				}
			}
			if len(sm.Values) == 0 {
				continue
			}
			for t, vs := range sm.Values {
				sm.Medians[t] = median(vs)
			}
			byRun := metricByRun(results, s, metric)
			ratios := runRatios(byRun, num, den)
			sm.Ratio = median(ratios)
			sm.Ratios = ratios
			sm.Complete = len(ratios) == len(byRun) && len(byRun) > 0
			sm.Anchors = anchorRatios(byRun, s)
			rep.Summary = append(rep.Summary, sm)
		}
	}
	rep.Latency = compareLadders(results)
	rep.Resolution = resolution(results)
	rep.Verdicts = verdicts(rep)
	rep.Runs = runs
	return rep
}

func (rep *report) find(scenario, metric string) *summary {
	for i := range rep.Summary {
		if rep.Summary[i].Scenario == scenario && rep.Summary[i].Metric == metric {
			return &rep.Summary[i]
		}
	}
	return nil
}

// verdicts checks the figures against the targets of the performance issue.
func verdicts(rep *report) []verdict {
	var out []verdict
	if s := rep.find("fanout", "max_deliveries_per_s"); s != nil && both(s, targetOurs, targetBare) {
		out = append(out, verdict{"fan-out 1 room: max deliveries/s >= 1.2x bare", s.Complete && s.Ratio >= 1.2,
			fmt.Sprintf("median %.0f vs %.0f deliveries/s; %s", s.Medians[targetOurs], s.Medians[targetBare], ratioText(s))})
	}
	if s := rep.find("fanout", "cpu_us_per_delivery_same_rate"); s != nil && s.Ratio > 0 {
		// Only when both passed a common step in some run.
		out = append(out, verdict{"fan-out 1 room: server CPU per delivery <= 0.8x bare", s.Complete && s.Ratio <= 0.8,
			fmt.Sprintf("median %.2f vs %.2f µs per delivery at the highest rate both passed; %s", s.Medians[targetOurs], s.Medians[targetBare], ratioText(s))})
	}
	if s := rep.find("crossnode", "deliveries_per_s_per_core_same_rate"); s != nil && both(s, targetOurs2, targetOurs) {
		var redis float64
		if r := rep.find("crossnode", "redis_cores_same_rate"); r != nil {
			redis = r.Medians[targetOurs2]
		}
		detail := fmt.Sprintf("median %.0f vs %.0f deliveries/s per server core at the highest rate both passed (server cores of the two nodes include redis-server: median %.2f cores); %s",
			s.Medians[targetOurs2], s.Medians[targetOurs], redis, ratioText(s))
		if v, ok := s.Medians[targetOursRedis]; ok {
			detail += fmt.Sprintf(". For comparison, all members on one node on Redis: median %.0f per server core", v)
			if rs := runRatios(metricByRun(rep.Results, "crossnode", "deliveries_per_s_per_core_same_rate"), targetOursRedis, targetOurs); len(rs) > 0 {
				detail += fmt.Sprintf(" (median %.2fx the memory layer's; runs: %s)", median(rs), joinRatios(rs))
			}
		}
		out = append(out, verdict{"fan-out over two nodes + Redis: >= 0.8x single node per server core", s.Complete && s.Ratio >= 0.8, detail})
	}
	if s := rep.find("rooms", "p99_ms"); s != nil && both(s, targetOurs, targetBare) {
		lost := rep.find("rooms", "lost")
		var lostOurs float64
		if lost != nil {
			for _, v := range lost.Values[targetOurs] {
				lostOurs += v
			}
		}
		out = append(out, verdict{"many rooms: nothing lost, p99 <= 1.5x bare", lostOurs == 0 && s.Complete && s.Ratio <= 1.5,
			fmt.Sprintf("lost %.0f (all runs); median p99 %.2f vs %.2f ms; %s", lostOurs, s.Medians[targetOurs], s.Medians[targetBare], ratioText(s))})
	}
	if s := rep.find("idle", "rss_kib_per_conn"); s != nil {
		if v, ok := s.Medians[targetOurs]; ok {
			failed := rep.find("idle", "failed")
			conns := rep.find("idle", "conns")
			var f, c float64
			if failed != nil {
				f = failed.Medians[targetOurs]
			}
			if conns != nil {
				c = conns.Medians[targetOurs]
			}
			worst := v
			for _, x := range s.Values[targetOurs] {
				worst = max(worst, x)
			}
			out = append(out, verdict{"idle: <= 12 KiB per connection in every run, nothing failing", worst <= 12 && f == 0,
				fmt.Sprintf("median %.1f KiB per connection (worst run %.1f) at %.0f connections held past a ping round (bare %.1f), %.0f failed",
					v, worst, c, s.Medians[targetBare], f)})
		}
	}
	if s := rep.find("idle", "conns"); s != nil {
		var largest, failedThere float64
		failed := rep.find("idle", "failed")
		for i, c := range s.Values[targetOurs] {
			if c > largest {
				largest = c
				if failed != nil && i < len(failed.Values[targetOurs]) {
					failedThere = failed.Values[targetOurs][i]
				}
			}
		}
		const want = 100000
		detail := fmt.Sprintf("largest run: %.0f connections, %.0f failed", largest, failedThere)
		if largest < want && rep.Machine.FileLimit > 0 && rep.Machine.FileLimit < want+100 {
			detail += fmt.Sprintf("; not tried: the hard limit on open files here is %d, and one node needs a descriptor per connection", rep.Machine.FileLimit)
		}
		out = append(out, verdict{"idle: 100 000 connections held by one node, nothing failing", largest >= want && failedThere == 0, detail})
	}
	out = append(out, anchorVerdicts(rep)...)
	return append(out, socketioVerdict(rep)...)
}

// metricByRun gives a scenario's metric by run and target, for the runs
// where some target has it.
func metricByRun(results []*result, scenario, metric string) map[int]map[string]float64 {
	byRun := map[int]map[string]float64{}
	for _, r := range results {
		if v, ok := r.Metrics[metric]; ok && r.Scenario == scenario {
			if byRun[r.Run] == nil {
				byRun[r.Run] = map[string]float64{}
			}
			byRun[r.Run][r.Target] = v
		}
	}
	return byRun
}

// runRatios divides target num's figure by den's, run by run, for the runs
// that have both (and a non-zero den).
func runRatios(byRun map[int]map[string]float64, num, den string) []float64 {
	var out []float64
	for _, run := range slices.Sorted(maps.Keys(byRun)) {
		a, okA := byRun[run][num]
		b, okB := byRun[run][den]
		if okA && okB && b != 0 {
			out = append(out, a/b)
		}
	}
	return out
}

func joinRatios(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.2f", r)
	}
	return strings.Join(parts, ", ")
}

// ratioText describes the per-run ratios behind a verdict.
func ratioText(s *summary) string {
	if len(s.Ratios) == 0 {
		return "no ratio: a target reached no passing figure"
	}
	t := fmt.Sprintf("median ratio %.2f (runs: %s)", s.Ratio, joinRatios(s.Ratios))
	if !s.Complete {
		t += "; some runs had no figure for one side, so the target is not met"
	}
	return t
}

func both(s *summary, a, b string) bool {
	_, okA := s.Medians[a]
	_, okB := s.Medians[b]
	return okA && okB
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeMarkdown writes the report, keeping the notes section of an
// existing file.
func (rep *report) writeMarkdown(path string) error {
	var notes string
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), notesMarker); i >= 0 {
			notes = string(old[i:])
		}
	}
	return os.WriteFile(path, []byte(rep.markdown(notes)), 0o644)
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (rep *report) markdown(notes string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ChatterPro benchmarks\n\n")
	fmt.Fprintf(&b, "Generated by `%s` on %s.\n\n", rep.Command, rep.Date)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), Linux %s, %s. Load generator, servers and Redis share the machine; "+
		"every run starts fresh server processes; ratios are medians of per-run ratios over %d run(s).\n\n",
		rep.Machine.NProc, rep.Machine.Model, rep.Machine.Kernel, rep.Machine.GoVersion, rep.runs)
	if len(rep.Verdicts) > 0 {
		b.WriteString("## Targets of the performance issue\n\n| target | met | measured |\n|---|---|---|\n")
		for _, v := range rep.Verdicts {
			met := "no"
			if v.Met {
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", v.Target, met, v.Detail)
		}
		b.WriteString("\n")
		if r := rep.Resolution; r != nil {
			fmt.Fprintf(&b, "The same centrifuge server measured twice in this set (its crossnode ladder over its fanout ladder; "+
				"\"Resolution\" in the latency view): p50 %.2f (worst step %.2f), p99 %.2f (worst step %.2f).\n\n",
				r.P50GeoMean, r.P50Worst, r.P99GeoMean, r.P99Worst)
		}
	}
	var scenario string
	for _, s := range rep.Summary {
		if s.Scenario != scenario {
			scenario = s.Scenario
			num, den := ratioPair(scenario)
			fmt.Fprintf(&b, "## %s\n\n%s\n\n| metric | %s | %s | %s / %s |", scenario, rep.params(scenario), num, den, num, den)
			for _, t := range rep.shownExtras(scenario) {
				fmt.Fprintf(&b, " %s |", t)
			}
			pairs := rep.shownPairs(scenario)
			for _, p := range pairs {
				fmt.Fprintf(&b, " %s / %s |", p[0], p[1])
			}
			fmt.Fprintf(&b, " all runs |\n|---|---|---|---|%s---|\n", strings.Repeat("---|", len(rep.shownExtras(scenario))+len(pairs)))
		}
		num, den := ratioPair(scenario)
		extra := rep.shownExtras(scenario)
		ratio := "—"
		if s.Ratio != 0 {
			ratio = fmt.Sprintf("%.2f", s.Ratio)
		}
		var all []string
		for _, t := range append([]string{num, den}, extra...) {
			var vs []string
			for _, v := range s.Values[t] {
				vs = append(vs, fmtNum(v))
			}
			if len(vs) > 0 {
				all = append(all, t+": "+strings.Join(vs, ", "))
			}
		}
		med := func(t string) string {
			if v, ok := s.Medians[t]; ok {
				return fmtNum(v)
			}
			return "—"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |", s.Metric, med(num), med(den), ratio)
		for _, t := range extra {
			fmt.Fprintf(&b, " %s |", med(t))
		}
		for _, p := range rep.shownPairs(scenario) {
			fmt.Fprintf(&b, " %s |", s.anchorRatioText(p))
		}
		fmt.Fprintf(&b, " %s |\n", strings.Join(all, "; "))
		if next := rep.nextScenario(s); next != scenario {
			b.WriteString("\n")
			rep.ladders(&b, scenario)
		}
	}
	rep.latencyMarkdown(&b)
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(&b, "Error in %s against %s, run %d: `%s`\n\n", r.Scenario, r.Target, r.Run, strings.SplitN(r.Error, "\n", 2)[0])
		}
	}
	if notes != "" {
		b.WriteString(notes)
		if !strings.HasSuffix(notes, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

func (rep *report) nextScenario(s summary) string {
	for i := range rep.Summary {
		if rep.Summary[i].Scenario == s.Scenario && rep.Summary[i].Metric == s.Metric {
			if i+1 < len(rep.Summary) {
				return rep.Summary[i+1].Scenario
			}
			return ""
		}
	}
	return ""
}

func (rep *report) params(scenario string) string {
	for _, r := range rep.Results {
		if r.Scenario == scenario && r.Params != nil {
			keys := make([]string, 0, len(r.Params))
			for k := range r.Params {
				if k != "nodes" && k != "layer" && k != "transport" && k != "redis_replicas" && !strings.HasPrefix(k, "loadavg") {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s=%v", k, r.Params[k]))
			}
			return "Parameters: " + strings.Join(parts, ", ") + "."
		}
	}
	return ""
}

// ladders prints the rate ladder of each target's first run.
func (rep *report) ladders(b *strings.Builder, scenario string) {
	for _, r := range rep.Results {
		if r.Scenario != scenario || r.Run != 1 || len(r.Steps) == 0 {
			continue
		}
		fmt.Fprintf(b, "Ladder of %s, run 1 (load average %v before, %v after):\n\n| msgs/s | deliveries/s | p50 ms | p99 ms | p999 ms | lost | dup | CPU µs/delivery | server cores | chatbench cores | pass |\n|---|---|---|---|---|---|---|---|---|---|---|\n", r.Target, r.Params["loadavg_before"], r.Params["loadavg_after"])
		for _, st := range r.Steps {
			cores := fmtNum(st.Cores)
			if st.RedisCores > 0 {
				cores += " (redis " + fmtNum(st.RedisCores) + ")"
			}
			fmt.Fprintf(b, "| %.0f | %.0f | %s | %s | %s | %d | %d | %s | %s | %s | %v |\n", st.MsgsPerSec, st.DeliveriesPerS,
				fmtNum(st.P50ms), fmtNum(st.P99ms), fmtNum(st.P999ms), st.Lost, st.Dups, fmtNum(st.CPUusPerDel), cores, fmtNum(st.LoadgenCores), st.Pass)
		}
		b.WriteString("\n")
	}
}

// mergeReports reads JSON reports and renders them as one: a scenario
// found in a later file replaces the same scenario of earlier ones.
func mergeReports(paths []string) (*report, error) {
	var results []*result
	var commands []string
	runs := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		fresh := map[string]bool{}
		for _, res := range r.Results {
			fresh[res.Scenario] = true
		}
		results = slices.DeleteFunc(results, func(res *result) bool { return fresh[res.Scenario] })
		results = append(results, r.Results...)
		commands = append(commands, r.Command)
		runs = max(runs, r.Runs)
		for _, res := range r.Results {
			runs = max(runs, res.Run)
		}
	}
	return newReport(strings.Join(commands, "` and `"), runs, results), nil
}
