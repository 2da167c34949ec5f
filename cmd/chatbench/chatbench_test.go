package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) {
	// The bare hub runs as a child process of this test binary.
	if addr := os.Getenv(bareEnv); addr != "" {
		if err := serveBare(addr); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	leakcheck.Main(m)
}

func TestBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789, 1 << 40, 1<<62 + 12345} {
		i := bucketOf(v)
		if i < prev {
			t.Errorf("bucketOf(%d) = %d, below the previous %d", v, i, prev)
		}
		prev = i
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if v >= 64 && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-9 {
			t.Errorf("bucket %d = [%d, %d] wider than 1/%d of its value", i, lo, hi, subCount)
		}
	}
	// Buckets tile the value range without gaps.
	for i := 1; i < 40*subCount; i++ {
		_, hiPrev := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if lo != hiPrev+1 {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, hiPrev)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values func(h *histogram)
		q      float64
		want   time.Duration
	}{
		{"uniform p50", func(h *histogram) {
			for i := 1; i <= 100000; i++ {
				h.record(time.Duration(i) * time.Microsecond)
			}
		}, 0.5, 50 * time.Millisecond},
		{"uniform p99", func(h *histogram) {
			for i := 1; i <= 100000; i++ {
				h.record(time.Duration(i) * time.Microsecond)
			}
		}, 0.99, 99 * time.Millisecond},
		{"outliers p999", func(h *histogram) {
			for range 9990 {
				h.record(time.Millisecond)
			}
			for range 10 {
				h.record(time.Second)
			}
		}, 0.999, time.Millisecond},
		{"outliers p9999", func(h *histogram) {
			for range 9990 {
				h.record(time.Millisecond)
			}
			for range 10 {
				h.record(time.Second)
			}
		}, 0.9999, time.Second},
		{"exact small", func(h *histogram) {
			for _, v := range []time.Duration{5, 7, 9} {
				h.record(v)
			}
		}, 0.5, 7},
		{"negative counts as zero", func(h *histogram) { h.record(-5) }, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			tt.values(&h)
			got := h.quantile(tt.q)
			if d := float64(got-tt.want) / float64(max(tt.want, 1)); d < -0.035 || d > 0.035 {
				t.Errorf("quantile(%v) = %v, want %v within 3.5%%", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Millisecond
		all.record(d)
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(&b)
	if a.n != all.n || a.max != all.max {
		t.Fatalf("merged n=%d max=%d, want n=%d max=%d", a.n, a.max, all.n, all.max)
	}
	for _, q := range []float64{0.5, 0.99, 0.999, 1} {
		if a.quantile(q) != all.quantile(q) {
			t.Errorf("quantile(%v) merged %v, want %v", q, a.quantile(q), all.quantile(q))
		}
	}
	var empty histogram
	if empty.quantile(0.99) != 0 {
		t.Errorf("empty histogram quantile = %v, want 0", empty.quantile(0.99))
	}
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name        string
		deliveries  [][2]uint32 // sender, seq
		sent        map[uint32]uint32
		wantUnique  uint64
		wantDups    uint64
		wantMissing map[uint32]uint64
	}{
		{"all once", [][2]uint32{{1, 0}, {1, 1}, {2, 0}}, map[uint32]uint32{1: 2, 2: 1}, 3, 0, map[uint32]uint64{1: 0, 2: 0}},
		{"one lost", [][2]uint32{{1, 0}, {1, 2}}, map[uint32]uint32{1: 3}, 2, 0, map[uint32]uint64{1: 1}},
		{"duplicate", [][2]uint32{{1, 0}, {1, 0}, {1, 1}}, map[uint32]uint32{1: 2}, 2, 1, map[uint32]uint64{1: 0}},
		{"lost and duplicate", [][2]uint32{{7, 100}, {7, 100}, {7, 100}}, map[uint32]uint32{7: 101}, 1, 2, map[uint32]uint64{7: 100}},
		{"other senders ignored", [][2]uint32{{1, 0}, {9, 0}, {9, 1}}, map[uint32]uint32{1: 1}, 1, 0, map[uint32]uint64{1: 0}},
		{"beyond sent ignored", [][2]uint32{{1, 0}, {1, 5}}, map[uint32]uint32{1: 2}, 1, 0, map[uint32]uint64{1: 1}},
		{"nothing received", nil, map[uint32]uint32{3: 64}, 0, 0, map[uint32]uint64{3: 64}},
		{"far sequence numbers", [][2]uint32{{1, 1000}, {1, 0}, {1, 1000}}, map[uint32]uint32{1: 1001}, 2, 1, map[uint32]uint64{1: 999}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			for _, d := range tt.deliveries {
				tr.record(d[0], d[1])
			}
			if got := tr.unique(tt.sent); got != tt.wantUnique {
				t.Errorf("unique = %d, want %d", got, tt.wantUnique)
			}
			if tr.dups != tt.wantDups {
				t.Errorf("dups = %d, want %d", tr.dups, tt.wantDups)
			}
			if tr.recv != uint64(len(tt.deliveries)) {
				t.Errorf("recv = %d, want %d", tr.recv, len(tt.deliveries))
			}
			for s, want := range tt.wantMissing {
				if got := tr.missing(s, tt.sent[s]); got != want {
					t.Errorf("missing(%d) = %d, want %d", s, got, want)
				}
			}
		})
	}
}

func TestParseText(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	f := messageFrame(nil, 42, 7, at)
	// The server's copy: an id first, the text as sent, more fields after.
	server := []byte(`{"id":"1700000000000-3","type":"message","user":"m1","text":"cb 42 7 1700000000123456789","time":"2023-11-14T22:13:20Z"}`)
	for _, frame := range [][]byte{f, server} {
		s, seq, sched, ok := parseText(frame)
		if !ok || s != 42 || seq != 7 || sched != at.UnixNano() {
			t.Errorf("parseText(%s) = %d %d %d %v", frame, s, seq, sched, ok)
		}
	}
	for _, bad := range []string{`{"type":"message","text":"hello"}`, `{"type":"message","text":"cb 1 2"}`, `{"type":"message","text":"cb x 2 3"}`} {
		if _, _, _, ok := parseText([]byte(bad)); ok {
			t.Errorf("parseText(%s) ok, want not ok", bad)
		}
	}
	c := &client{tr: newTracker()}
	c.handle(server, at.Add(time.Millisecond))
	c.handle(server, at.Add(2*time.Millisecond))
	c.handle([]byte(`{"type":"error","code":"bad_text","text":"no"}`), at)
	tr, h, errs, _ := c.take()
	if tr.recv != 2 || tr.dups != 1 || h.n != 1 || errs != 1 {
		t.Errorf("after two copies and an error: recv %d dups %d latencies %d errors %d, want 2 1 1 1", tr.recv, tr.dups, h.n, errs)
	}
	if got := h.quantile(1); got < 990*time.Microsecond || got > time.Millisecond {
		t.Errorf("latency %v, want about 1ms", got)
	}
}

// smokeMembers is the room of the smoke ladders: big enough that every
// server's CPU over a one-second step is measurable (the kernel counts it
// in 10 ms ticks; a room of 5 at 28 messages/s sometimes counted none, and
// a ratio to zero CPU has no verdict).
const smokeMembers = 20

// smokeLadder runs a two-step ladder of scenario against a fresh build,
// checks that every target delivered every message to all smokeMembers once,
// and returns the results, the targets seen and the Markdown report.
// The centrifuge anchor is left out (TestSmokeCentrifuge runs it).
func smokeLadder(t *testing.T, scenario string) ([]*result, map[string]bool, string) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatterpro")
	build := exec.Command("go", "build", "-o", bin, "github.com/chatterpro/chatterpro/cmd/chatterpro")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chatterpro: %v\n%s", err, out)
	}
	cfg, _, _, err := parseFlags([]string{"-scenario", scenario, "-centrifuge=false", "-server", bin, "-members", strconv.Itoa(smokeMembers), "-senders", "2", "-rate-start", "100",
		"-steps", "2", "-step", "1s", "-warmup", "500ms", "-p99-limit", "10s", "-settle", "200ms", "-drain", "2s", "-timeout", "50s",
		"-json", filepath.Join(dir, "out.json"), "-md", filepath.Join(dir, "out.md")})
	if err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "out.md")
	if err := os.WriteFile(md, []byte("old\n"+notesMarker+"\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	results, err := run(context.Background(), cfg, []string{"-scenario", scenario})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Target] = true
		if len(r.Steps) != 2 {
			t.Errorf("%s: %d steps, want 2", r.Target, len(r.Steps))
			continue
		}
		for i, st := range r.Steps {
			if !st.Pass || st.Lost != 0 || st.Dups != 0 || st.Deliveries != st.Sent*smokeMembers || st.Sent == 0 {
				t.Errorf("%s step %d: %+v, want every message delivered to all %d once", r.Target, i+1, st, smokeMembers)
			}
		}
		if r.Metrics["max_deliveries_per_s"] <= 0 {
			t.Errorf("%s: no max deliveries/s: %v", r.Target, r.Metrics)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.json")); err != nil {
		t.Error(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	return results, seen, string(b)
}

// The cross-node scenario starts its three targets (one node on the
// memory layer, one on Redis, two on one Redis) and reports all three.
func TestSmokeCrossnode(t *testing.T) {
	results, seen, md := smokeLadder(t, "crossnode")
	if len(seen) != 3 || !seen[targetOurs] || !seen[targetOursRedis] || !seen[targetOurs2] {
		t.Errorf("targets run: %v, want %s, %s and %s", seen, targetOurs, targetOursRedis, targetOurs2)
	}
	for _, r := range results {
		nodes, layer := 1, "redis"
		switch r.Target {
		case targetOurs2:
			nodes = 2
		case targetOurs:
			layer = "memory"
		}
		if r.Params["nodes"] != nodes || r.Params["layer"] != layer {
			t.Errorf("%s: %v nodes on %v, want %d on %s", r.Target, r.Params["nodes"], r.Params["layer"], nodes, layer)
		}
	}
	mdContains(t, md, "## crossnode", "| chatterpro-redis |", "all members on one node on Redis")
}

// TestSmokeFanout runs the fan-out scenario at a tiny size against a
// freshly built chatterpro and the bare hub.
func TestSmokeFanout(t *testing.T) {
	_, seen, md := smokeLadder(t, "fanout")
	if !seen[targetOurs] || !seen[targetBare] {
		t.Errorf("targets run: %v, want both", seen)
	}
	mdContains(t, md, "# ChatterPro benchmarks", "## fanout", "max_deliveries_per_s", notesMarker+"\nhand-written")
}

// The cross-node target compares the two ladders at the highest rate both
// passed, not at each one's own highest step.
func TestCrossnodeComparedAtSameRate(t *testing.T) {
	ladder := func(target string, cores ...float64) *result {
		r := &result{Scenario: "crossnode", Target: target, Run: 1}
		rate := 10.0
		for i, c := range cores {
			st := step{MsgsPerSec: rate, DeliveriesPerS: rate * 100, Cores: c, Pass: c > 0, CPUusPerDel: c * 1e6 / (rate * 100)}
			if target == targetOurs2 {
				st.RedisCores = 0.01 * float64(i+1)
			}
			r.Steps = append(r.Steps, st)
			rate *= 2
		}
		r.Metrics = fanoutMetrics(r.Steps)
		return r
	}
	// One node climbs a step further, where a core delivers much more.
	one := ladder(targetOurs, 0.1, 0.2, 0.25)
	two := ladder(targetOurs2, 0.12, 0.24, 0)
	rep := newReport("test", 1, []*result{one, two})
	s := rep.find("crossnode", "deliveries_per_s_per_core_same_rate")
	if s == nil {
		t.Fatal("no deliveries_per_s_per_core_same_rate")
	}
	// At 20 msgs/s: 2000 deliveries/s on 0.24 cores against 0.2.
	if want := 0.2 / 0.24; s.Ratio < want-1e-9 || s.Ratio > want+1e-9 {
		t.Errorf("ratio %v, want %v", s.Ratio, want)
	}
	if r := rep.find("crossnode", "redis_cores_same_rate"); r == nil || r.Medians[targetOurs2] != 0.02 {
		t.Errorf("redis cores at the same rate: %+v, want 0.02", r)
	}
	var v *verdict
	for i := range rep.Verdicts {
		if strings.HasPrefix(rep.Verdicts[i].Target, "fan-out over two nodes") {
			v = &rep.Verdicts[i]
		}
	}
	if v == nil || !v.Met || !strings.Contains(v.Detail, "highest rate both passed") || !strings.Contains(v.Detail, "redis") {
		t.Errorf("verdict %+v, want met, at the same rate, with Redis's share", v)
	}
	// At each ladder's own highest step the ratio would be 0.58 and fail.
	if at := rep.find("crossnode", "deliveries_per_s_per_core"); at == nil || at.Ratio > 0.6 {
		t.Errorf("at-max ratio %+v, want the old figure kept for information", at)
	}
}

// The one-node-on-Redis target of the cross-node scenario is shown at the
// same rate as the other two, but a ladder of it that ends early does not
// lower that rate.
func TestCrossnodeRedisNodeForInformation(t *testing.T) {
	ladder := func(target string, cores ...float64) *result {
		r := &result{Scenario: "crossnode", Target: target, Run: 1}
		rate := 10.0
		for _, c := range cores {
			st := step{MsgsPerSec: rate, DeliveriesPerS: rate * 100, Cores: c, Pass: c > 0}
			if target != targetOurs {
				st.RedisCores = 0.01
			}
			r.Steps = append(r.Steps, st)
			rate *= 2
		}
		r.Metrics = fanoutMetrics(r.Steps)
		return r
	}
	// 0.5 at the first step, 0.8 at the second.
	one := ladder(targetOurs, 0.1, 0.2)
	two := ladder(targetOurs2, 0.2, 0.25)

	short := newReport("test", 1, []*result{one, ladder(targetOursRedis, 0.11, 0), two})
	s := short.find("crossnode", "deliveries_per_s_per_core_same_rate")
	if s == nil || s.Ratio != 0.8 {
		t.Fatalf("ratio %+v, want 0.8 at the second step despite the Redis node's shorter ladder", s)
	}
	if _, ok := s.Medians[targetOursRedis]; ok {
		t.Errorf("the Redis node has a figure at a rate it failed: %v", s.Medians)
	}

	one, two = ladder(targetOurs, 0.1, 0.2), ladder(targetOurs2, 0.2, 0.25)
	full := newReport("test", 1, []*result{one, ladder(targetOursRedis, 0.11, 0.22), two})
	s = full.find("crossnode", "deliveries_per_s_per_core_same_rate")
	if s == nil || s.Ratio != 0.8 {
		t.Fatalf("ratio %+v, want 0.8", s)
	}
	if got, want := s.Medians[targetOursRedis], 2000/0.22; got != want {
		t.Errorf("Redis node: %v deliveries/s per core, want %v", got, want)
	}
	var detail string
	for _, v := range full.Verdicts {
		if strings.HasPrefix(v.Target, "fan-out over two nodes") {
			detail = v.Detail
		}
	}
	if !strings.Contains(detail, "one node on Redis: median 9091 per server core (median 0.91x the memory layer's; runs: 0.91)") {
		t.Errorf("verdict detail %q lacks the one-node-on-Redis figure", detail)
	}
	md := full.markdown("")
	if !strings.Contains(md, "| chatterpro-2nodes / chatterpro | chatterpro-redis | all runs |") ||
		!strings.Contains(md, "| deliveries_per_s_per_core_same_rate | 8000 | 10000 | 0.80 | 9091 |") {
		t.Errorf("markdown lacks the Redis node's column:\n%s", md)
	}
}

// The idle memory target holds only if every run is under it, and the
// 100 000-connection target is judged from the largest run.
func TestIdleVerdicts(t *testing.T) {
	idle := func(run int, conns, kib float64) *result {
		return &result{Scenario: "idle", Target: targetOurs, Run: run,
			Metrics: map[string]float64{"conns": conns, "failed": 0, "rss_kib_per_conn": kib}}
	}
	for _, tc := range []struct {
		name        string
		kib         [3]float64
		conns       float64
		memory, big bool
	}{
		{"all under", [3]float64{10, 11.9, 10.2}, 10000, true, false},
		{"one run over", [3]float64{10, 12.5, 10.2}, 10000, false, false},
		{"100k held", [3]float64{9, 9, 9}, 100000, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs []*result
			for i, k := range tc.kib {
				rs = append(rs, idle(i+1, tc.conns, k))
			}
			rep := newReport("test", 3, rs)
			got := map[string]bool{}
			for _, v := range rep.Verdicts {
				got[v.Target] = v.Met
			}
			if m, ok := got["idle: <= 12 KiB per connection in every run, nothing failing"]; !ok || m != tc.memory {
				t.Errorf("memory verdict %v (present %v), want %v; verdicts %+v", m, ok, tc.memory, rep.Verdicts)
			}
			if m, ok := got["idle: 100 000 connections held by one node, nothing failing"]; !ok || m != tc.big {
				t.Errorf("100k verdict %v (present %v), want %v; verdicts %+v", m, ok, tc.big, rep.Verdicts)
			}
		})
	}
}

// A command that fails partway keeps what finished: the runs of the
// scenarios before the failure are written next to -json, ready for -merge.
func TestPartialResultsKept(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	// The bare hub has no cross-node setup: that scenario fails after
	// fan-out finished.
	cfg, _, _, err := parseFlags([]string{"-scenario", "fanout,crossnode", "-target", "bare", "-members", "5", "-senders", "2",
		"-rate-start", "20", "-steps", "1", "-step", "1s", "-warmup", "0s", "-p99-limit", "10s", "-settle", "200ms", "-drain", "2s",
		"-timeout", "50s", "-json", out})
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(context.Background(), cfg, nil)
	if !errors.Is(err, errNoTarget) || !strings.Contains(err.Error(), out+".partial") {
		t.Fatalf("run: %v, want the cross-node failure naming %s.partial", err, out)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s written by a failed command", out)
	}
	rep, err := mergeReports([]string{out + ".partial"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || rep.Results[0].Scenario != "fanout" || rep.Results[0].Target != targetBare || len(rep.Results[0].Steps) != 1 {
		t.Fatalf("partial results %+v, want the bare hub's one-step fan-out", rep.Results)
	}
}

func TestBareFlag(t *testing.T) {
	for _, flag := range []string{"-bare", "--bare", "-serve-bare"} {
		_, bare, addr, err := parseFlags([]string{flag, "-addr", "127.0.0.1:4100"})
		if err != nil || !bare || addr != "127.0.0.1:4100" {
			t.Errorf("%s -addr 127.0.0.1:4100: bare %v, addr %q, err %v; want the bare hub on that address", flag, bare, addr, err)
		}
	}
	if _, bare, addr, err := parseFlags(nil); err != nil || bare || addr != "127.0.0.1:4000" {
		t.Errorf("no flags: bare %v, addr %q, err %v; want a benchmark run, the bare hub's address at its default", bare, addr, err)
	}
}

// TestReniceSetsNice: renice sets a child's nice value and reads it back;
// lowering it (what -redis-nice does) works with the privilege and says
// what it needs without. Values are relative to the nice the child
// inherits, so the test holds under nice(1) too.
func TestReniceSetsNice(t *testing.T) {
	self, err := niceOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p, err := startProc(t.TempDir(), "sleeper", "/bin/sleep", nil, "60")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	if n, err := niceOf(p.pid()); err != nil || n != self {
		t.Fatalf("a new child's nice: %d, %v; want %d, its parent's", n, err, self)
	}
	up := min(self+5, 19)
	if n, err := renice(p.pid(), up); err != nil || n != up {
		t.Fatalf("renice to %d (raising is always allowed): %d, %v", up, n, err)
	}
	down := max(self-3, -20)
	n, err := renice(p.pid(), down)
	switch {
	case err == nil && n != down:
		t.Errorf("renice to %d reported no error but the nice is %d", down, n)
	case err != nil && (n != up || !strings.Contains(err.Error(), "CAP_SYS_NICE")):
		t.Errorf("renice to %d without the privilege: %d, %v; want %d kept and an error naming CAP_SYS_NICE", down, n, err, up)
	}
}

// mdContains fails t for each of wants that the markdown md lacks.
func mdContains(t *testing.T, md string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
