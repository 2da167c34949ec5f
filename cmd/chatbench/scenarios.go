package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is one scenario run against one target.
type result struct {
	Scenario string             `json:"scenario"`
	Target   string             `json:"target"`
	Run      int                `json:"run"`
	Params   map[string]any     `json:"params"`
	Metrics  map[string]float64 `json:"metrics"`
	Steps    []step             `json:"steps,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// step is one rung of a fan-out rate ladder.
type step struct {
	MsgsPerSec     float64 `json:"msgs_per_s"`
	Sent           uint64  `json:"sent"`
	Deliveries     uint64  `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	Lost           uint64  `json:"lost"`
	Dups           uint64  `json:"dups"`
	Errors         int     `json:"error_frames"`
	Closed         int     `json:"closed_conns"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	P999ms         float64 `json:"p999_ms"`
	CPUusPerDel    float64 `json:"cpu_us_per_delivery"`
	Cores          float64 `json:"server_cores"` // every process of the target, Redis included
	RedisCores     float64 `json:"redis_cores,omitempty"`
	LoadgenCores   float64 `json:"loadgen_cores"`
	Retry          bool    `json:"retry,omitempty"`
	Pass           bool    `json:"pass"`
}

// selfCPU returns the CPU time chatbench itself has used.
func selfCPU() time.Duration {
	d, _ := cpuTime(os.Getpid())
	return d
}

// loadAvg returns the machine's one-minute load average: how busy the
// shared machine was around a measurement.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// measurement collects what the receivers saw since their last take.
type measurement struct {
	hist       histogram
	unique     uint64
	dups       uint64
	errors     int
	firstError string
	closed     int
}

// collect takes every client's measurement; expected returns the senders
// (and their sent counts) whose messages client i should have received.
func collect(clients []*client, expected func(i int) map[uint32]uint32) (measurement, uint64) {
	var m measurement
	var want uint64
	for i, c := range clients {
		tr, h, errs, first := c.take()
		m.hist.merge(h)
		sent := expected(i)
		for _, n := range sent {
			want += uint64(n)
		}
		m.unique += tr.unique(sent)
		m.dups += tr.dups
		m.errors += errs
		if m.firstError == "" {
			m.firstError = first
		}
		if c.closed.Load() {
			m.closed++
		}
	}
	return m, want
}

// waitDelivered polls until the clients have received want distinct
// messages or the drain time is over.
func waitDelivered(ctx context.Context, clients []*client, expected func(i int) map[uint32]uint32, want uint64, drain time.Duration) {
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var got uint64
		for i, c := range clients {
			got += c.uniqueNow(expected(i))
		}
		if got >= want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendPaced sends from c as sender id at the given interval, starting at
// start+offset until end. Each message carries its scheduled time, so a
// sender that falls behind does not hide the delay. It returns how many
// messages were sent.
func sendPaced(ctx context.Context, c *client, id uint32, start time.Time, offset, interval time.Duration, end time.Time) (uint32, error) {
	var buf []byte
	var seq uint32
	for {
		sched := start.Add(offset + time.Duration(seq)*interval)
		if !sched.Before(end) || ctx.Err() != nil {
			return seq, nil
		}
		if d := time.Until(sched); d > 0 {
			time.Sleep(d)
		}
		buf = c.frame(buf, id, seq, sched)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.write(wctx, buf)
		cancel()
		if err != nil {
			return seq, err
		}
		seq++
	}
}

func connectProgress(label string, n int) func(int, time.Duration) {
	every := max(100, n/10)
	return func(done int, _ time.Duration) {
		if done%every == 0 || done == n {
			logf("%s: %d/%d connected", label, done, n)
		}
	}
}

// runFanout joins cfg.members clients to one room (spread over the
// target's nodes) and climbs a ladder of publish rates until a step fails.
func runFanout(ctx context.Context, cfg *config, nc *netClient, t *target, label string) (*result, error) {
	s := cfg.members
	res := &result{Scenario: "fanout", Target: t.name, Params: map[string]any{
		"members": s, "senders": min(cfg.senders, s), "step": cfg.stepDur.String(), "rate_start": cfg.rateStart,
		"rate_factor": cfg.rateFactor, "max_steps": cfg.steps, "warmup": cfg.warmup.String(), "p99_limit_ms": ms(cfg.p99Limit), "nodes": len(t.bases), "layer": t.layer}}
	begin := time.Now()
	clients, err := connectAll(ctx, nc, s, cfg.conc,
		func(i int) string { return t.bases[i%len(t.bases)] },
		func(int) string { return "fanout" }, connectProgress(label, s))
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	time.Sleep(cfg.settle)
	k := min(cfg.senders, s)
	rate := cfg.rateStart
	retried := false
	warming := cfg.warmup > 0
	for n := 0; n < cfg.steps && time.Since(begin) < cfg.maxDur; n++ {
		if err := t.alive(); err != nil {
			return nil, err
		}
		for _, c := range clients {
			c.take()
		}
		sent := make([]uint32, k)
		ids := make([]uint32, k)
		interval := time.Duration(float64(time.Second) * float64(k) / rate)
		dur := cfg.stepDur
		if warming {
			dur = cfg.warmup
		}
		start := time.Now().Add(20 * time.Millisecond)
		end := start.Add(dur)
		cpu0, aux0, self0 := t.cpu(), t.auxCPU(), selfCPU()
		var wg sync.WaitGroup
		var sendErr atomic.Pointer[error]
		for j := range k {
			ids[j] = uint32(n*1000 + j)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				sent[j], err = sendPaced(ctx, clients[j], ids[j], start, time.Duration(j)*interval/time.Duration(k), interval, end)
				if err != nil {
					sendErr.CompareAndSwap(nil, &err)
				}
			}()
		}
		wg.Wait()
		sentMap := make(map[uint32]uint32, k)
		var total uint64
		for j := range k {
			sentMap[ids[j]] = sent[j]
			total += uint64(sent[j])
		}
		expected := func(int) map[uint32]uint32 { return sentMap }
		waitDelivered(ctx, clients, expected, total*uint64(s), cfg.drain)
		wall := time.Since(start)
		cpu, aux, self := t.cpu()-cpu0, t.auxCPU()-aux0, selfCPU()-self0
		m, want := collect(clients, expected)
		st := step{
			RedisCores:   aux.Seconds() / wall.Seconds(),
			LoadgenCores: self.Seconds() / wall.Seconds(), Retry: retried,
			MsgsPerSec: rate, Sent: total, Deliveries: m.unique,
			DeliveriesPerS: float64(m.unique) / dur.Seconds(),
			Lost:           want - m.unique, Dups: m.dups, Errors: m.errors, Closed: m.closed,
			P50ms: ms(m.hist.quantile(0.5)), P99ms: ms(m.hist.quantile(0.99)), P999ms: ms(m.hist.quantile(0.999)),
			Cores: cpu.Seconds() / wall.Seconds(),
		}
		if m.unique > 0 {
			st.CPUusPerDel = float64(cpu.Microseconds()) / float64(m.unique)
		}
		st.Pass = st.Lost == 0 && st.Dups == 0 && st.Errors == 0 && st.Closed == 0 &&
			sendErr.Load() == nil && m.hist.quantile(0.99) < cfg.p99Limit
		verdict := "ok"
		if !st.Pass {
			verdict = "FAIL"
			if e := sendErr.Load(); e != nil {
				verdict += " (send: " + (*e).Error() + ")"
			}
			if m.firstError != "" {
				verdict += " (error frame: " + m.firstError + ")"
			}
		}
		logf("%s: step %d %.0f msg/s -> %.0f deliveries/s p50 %.2fms p99 %.2fms p999 %.2fms lost %d dup %d closed %d cpu %.2fµs/delivery server %.2f cores, chatbench %.2f cores %s",
			label, n+1, rate, st.DeliveriesPerS, st.P50ms, st.P99ms, st.P999ms, st.Lost, st.Dups, st.Closed, st.CPUusPerDel, st.Cores, st.LoadgenCores, verdict)
		if len(t.aux) > 0 {
			logf("%s: step %d: redis-server used %.2f of the %.2f server cores", label, n+1, st.RedisCores, st.Cores)
		}
		if warming {
			// Not measured: the first messages on fresh connections grow
			// stacks and buffers in every process.
			logf("%s: that was the warm-up step, not counted", label)
			warming = false
			n--
			continue
		}
		if !st.Pass && !retried && cfg.retry {
			// One failure may be noise (the machine is shared): retry the
			// rate once before ending the ladder.
			retried = true
			continue
		}
		res.Steps = append(res.Steps, st)
		if !st.Pass {
			break
		}
		retried = false
		rate *= cfg.rateFactor
	}
	res.Metrics = fanoutMetrics(res.Steps)
	return res, nil
}

// fanoutMetrics summarizes a ladder by its highest passing step.
func fanoutMetrics(steps []step) map[string]float64 {
	m := map[string]float64{"max_deliveries_per_s": 0, "passed_steps": 0, "deliveries_per_s_per_core": 0}
	for _, st := range steps {
		if !st.Pass {
			break
		}
		m["passed_steps"]++
		m["max_deliveries_per_s"] = st.DeliveriesPerS
		m["max_msgs_per_s"] = st.MsgsPerSec
		m["p99_ms_at_max"] = st.P99ms
		m["cpu_us_per_delivery_at_max"] = st.CPUusPerDel
		m["server_cores_at_max"] = st.Cores
		if st.Cores > 0 {
			m["deliveries_per_s_per_core"] = st.DeliveriesPerS / st.Cores
		}
	}
	return m
}

// runRooms joins rooms rooms of cfg.roomSize members; every member sends
// one message per second for cfg.roomsDur. With nc.acks the latency of a
// sender's own copy (its acknowledgement) is reported apart (ack_*), and
// p50_ms... are then those of the deliveries to the other members.
func runRooms(ctx context.Context, cfg *config, nc *netClient, t *target, label string, rooms int) (*result, error) {
	n := rooms * cfg.roomSize
	res := &result{Scenario: "rooms", Target: t.name, Params: map[string]any{
		"rooms": rooms, "members": cfg.roomSize, "msgs_per_member_per_s": 1, "duration": cfg.roomsDur.String(),
		"latency_warmup": cfg.warmup.String()}}
	clients, err := connectAll(ctx, nc, n, cfg.conc,
		func(i int) string { return t.bases[i%len(t.bases)] },
		func(i int) string { return "room-" + strconv.Itoa(i/cfg.roomSize) }, connectProgress(label, n))
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	time.Sleep(cfg.settle)
	for _, c := range clients {
		c.take()
		c.takeAcks()
	}
	sent := make([]uint32, n)
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(cfg.roomsDur)
	for _, c := range clients {
		c.measureFrom.Store(start.Add(cfg.warmup).UnixNano())
	}
	cpu0, aux0, self0 := t.cpu(), t.auxCPU(), selfCPU()
	var wg sync.WaitGroup
	var sendErr atomic.Pointer[error]
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset := time.Duration(rand.Int64N(int64(time.Second)))
			var err error
			sent[i], err = sendPaced(ctx, clients[i], uint32(i), start, offset, time.Second, end)
			if err != nil {
				sendErr.CompareAndSwap(nil, &err)
			}
		}()
	}
	stopProgress := progressTicker(label, clients)
	wg.Wait()
	roomSent := make([]map[uint32]uint32, rooms)
	var total uint64
	for i := range n {
		r := i / cfg.roomSize
		if roomSent[r] == nil {
			roomSent[r] = make(map[uint32]uint32, cfg.roomSize)
		}
		roomSent[r][uint32(i)] = sent[i]
		total += uint64(sent[i])
	}
	expected := func(i int) map[uint32]uint32 { return roomSent[i/cfg.roomSize] }
	waitDelivered(ctx, clients, expected, total*uint64(cfg.roomSize), cfg.drain)
	stopProgress()
	wall := time.Since(start)
	cpu, aux, self := t.cpu()-cpu0, t.auxCPU()-aux0, selfCPU()-self0
	var acks histogram
	for _, c := range clients {
		acks.merge(c.takeAcks())
	}
	m, want := collect(clients, expected)
	res.Metrics = map[string]float64{
		"sent": float64(total), "deliveries": float64(m.unique),
		"deliveries_per_s": float64(m.unique) / cfg.roomsDur.Seconds(),
		"lost":             float64(want - m.unique), "dups": float64(m.dups),
		"error_frames": float64(m.errors), "closed_conns": float64(m.closed),
		"p50_ms": ms(m.hist.quantile(0.5)), "p99_ms": ms(m.hist.quantile(0.99)), "p999_ms": ms(m.hist.quantile(0.999)),
		"server_cores": cpu.Seconds() / wall.Seconds(), "loadgen_cores": self.Seconds() / wall.Seconds(),
	}
	if m.unique > 0 {
		res.Metrics["cpu_us_per_delivery"] = float64(cpu.Microseconds()) / float64(m.unique)
	}
	if len(t.aux) > 0 {
		res.Metrics["redis_cores"] = aux.Seconds() / wall.Seconds()
	}
	if nc.acks {
		res.Metrics["acks"] = float64(acks.n)
		res.Metrics["ack_p50_ms"], res.Metrics["ack_p99_ms"], res.Metrics["ack_p999_ms"] =
			ms(acks.quantile(0.5)), ms(acks.quantile(0.99)), ms(acks.quantile(0.999))
		logf("%s: acknowledgements (own copies back): p50 %.2fms p99 %.2fms p999 %.2fms; deliveries to the others below",
			label, res.Metrics["ack_p50_ms"], res.Metrics["ack_p99_ms"], res.Metrics["ack_p999_ms"])
	}
	if e := sendErr.Load(); e != nil {
		res.Error = "send: " + (*e).Error()
	}
	logf("%s: %d sent, %d deliveries, lost %d dup %d, p50 %.2fms p99 %.2fms p999 %.2fms, cpu %.2fµs/delivery",
		label, total, m.unique, want-m.unique, m.dups, res.Metrics["p50_ms"], res.Metrics["p99_ms"], res.Metrics["p999_ms"], res.Metrics["cpu_us_per_delivery"])
	return res, nil
}

// progressTicker logs deliveries so far every few seconds until stopped.
func progressTicker(label string, clients []*client) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(3 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				var recv uint64
				for _, c := range clients {
					c.mu.Lock()
					recv += c.tr.recv
					c.mu.Unlock()
				}
				logf("%s: %d deliveries so far", label, recv)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// runIdle opens cfg.idleConns connections and reports the server's
// resident memory per connection.
func runIdle(ctx context.Context, cfg *config, nc *netClient, t *target, label string) (*result, error) {
	n := cfg.idleConns
	res := &result{Scenario: "idle", Target: t.name, Params: map[string]any{
		"conns": n, "room_size": cfg.idleRoomSize, "hold": cfg.idleHold.String()}}
	rss0 := t.rss()
	begin := time.Now()
	clients, err := connectAll(ctx, nc, n, cfg.conc,
		func(i int) string { return t.bases[i%len(t.bases)] },
		func(i int) string { return "idle-" + strconv.Itoa(i/cfg.idleRoomSize) }, connectProgress(label, n))
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	took := time.Since(begin)
	time.Sleep(cfg.settle + 2*time.Second)
	rssConnected := t.rss()
	// Measured again after the hold: an idle server still pings every
	// connection (every 25 s by default), and the memory that costs counts.
	logf("%s: holding %d connections for %s", label, n, cfg.idleHold)
	time.Sleep(cfg.idleHold)
	rss1 := t.rss()
	failed := 0
	for _, c := range clients {
		if c.closed.Load() {
			failed++
		}
	}
	if err := t.alive(); err != nil {
		return nil, err
	}
	res.Metrics = map[string]float64{
		"conns": float64(n), "failed": float64(failed),
		"rss_before_mib": float64(rss0) / (1 << 20), "rss_after_mib": float64(rss1) / (1 << 20),
		"rss_kib_per_conn":            float64(rss1-rss0) / 1024 / float64(n),
		"rss_kib_per_conn_at_connect": float64(rssConnected-rss0) / 1024 / float64(n),
		"connect_s":                   took.Seconds(),
	}
	logf("%s: %d conns, %d failed, RSS %.1f -> %.1f MiB, %.1f KiB per connection after the hold (%.1f right after connecting)",
		label, n, failed, res.Metrics["rss_before_mib"], res.Metrics["rss_after_mib"], res.Metrics["rss_kib_per_conn"],
		res.Metrics["rss_kib_per_conn_at_connect"])
	return res, nil
}

// runConnect measures how fast new members can join (HTTP join, websocket
// upgrade, first frame).
func runConnect(ctx context.Context, cfg *config, nc *netClient, t *target, label string) (*result, error) {
	n := cfg.connectConns
	res := &result{Scenario: "connect", Target: t.name, Params: map[string]any{
		"conns": n, "concurrency": cfg.conc, "room_size": cfg.idleRoomSize}}
	var mu sync.Mutex
	var h histogram
	prog := connectProgress(label, n)
	cpu0 := t.cpu()
	begin := time.Now()
	clients, err := connectAll(ctx, nc, n, cfg.conc,
		func(i int) string { return t.bases[i%len(t.bases)] },
		func(i int) string { return "conn-" + strconv.Itoa(i/cfg.idleRoomSize) },
		func(done int, took time.Duration) {
			mu.Lock()
			h.record(took)
			mu.Unlock()
			prog(done, took)
		})
	if err != nil {
		return nil, err
	}
	took := time.Since(begin)
	cpu := t.cpu() - cpu0
	closeAll(clients)
	res.Metrics = map[string]float64{
		"conns_per_s": float64(n) / took.Seconds(),
		"p50_ms":      ms(h.quantile(0.5)), "p99_ms": ms(h.quantile(0.99)),
		"cpu_us_per_conn": float64(cpu.Microseconds()) / float64(n),
	}
	logf("%s: %d connections in %.2fs = %.0f/s, p50 %.2fms p99 %.2fms",
		label, n, took.Seconds(), res.Metrics["conns_per_s"], res.Metrics["p50_ms"], res.Metrics["p99_ms"])
	return res, nil
}

var errNoTarget = errors.New("chatbench: scenario has no target to run")

// scenarioTargets lists which targets a scenario runs against.
func scenarioTargets(cfg *config, scenario string) []string {
	if isSSEScenario(scenario) {
		if cfg.target != "both" && cfg.target != "ours" {
			return nil // ChatterPro's own transports: no anchor serves the fallback
		}
		return []string{targetOurs, targetOursSSE}
	}
	if scenario == scenarioReplicas {
		if cfg.target != "both" && cfg.target != "ours" {
			return nil // a setting of ChatterPro's Redis layer: nothing to compare with
		}
		return []string{targetOursReplicas0, targetOursReplicas1}
	}
	return slices.Concat(ownTargets(cfg, scenario), anchorTargets(cfg, scenario), socketioTargets(cfg, scenario))
}

// ownTargets lists ChatterPro's targets and the bare hub's.
func ownTargets(cfg *config, scenario string) []string {
	if scenario == "crossnode" {
		var ts []string
		if cfg.target == "both" || cfg.target == "ours" {
			ts = []string{targetOurs, targetOursRedis, targetOurs2}
		}
		return ts
	}
	switch cfg.target {
	case "ours":
		return []string{targetOurs}
	case "bare":
		return []string{targetBare}
	case "centrifuge", targetSocketIO:
		return nil
	}
	return []string{targetOurs, targetBare}
}

// runScenario runs one scenario cfg.runs times against each target, each
// run on freshly started servers.
func runScenario(ctx context.Context, cfg *config, nc *netClient, dir, scenario string) ([]*result, error) {
	targets := scenarioTargets(cfg, scenario)
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w (-target %s; centrifuge runs in fanout, crossnode and rooms, socketio in fanout only)", errNoTarget, cfg.target)
	}
	var out []*result
	for run := 1; run <= cfg.runs; run++ {
		for _, name := range targets {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			var t *target
			var err error
			switch name {
			case targetBare:
				t, err = startBare(ctx, dir)
			case targetOurs2:
				t, err = startOurs(ctx, cfg, dir, 2, true, targetOurs2)
			case targetOursRedis:
				t, err = startOurs(ctx, cfg, dir, 1, true, targetOursRedis)
			case targetCentrifuge:
				t, err = startCentrifuge(ctx, cfg, dir, 1, targetCentrifuge)
			case targetCentrifuge2:
				t, err = startCentrifuge(ctx, cfg, dir, 2, targetCentrifuge2)
			case targetSocketIO:
				t, err = startSocketIO(ctx, cfg, dir)
			case targetOursReplicas0:
				t, err = startReplicated(ctx, cfg, dir, 0, name)
			case targetOursReplicas1:
				t, err = startReplicated(ctx, cfg, dir, 1, name)
			default:
				t, err = startOurs(ctx, cfg, dir, 1, false, name)
			}
			if err != nil {
				return out, err
			}
			tnc := nc
			if name == targetOursSSE {
				tnc = nc.withSSE()
			}
			if scenario == scenarioReplicas {
				tnc = nc.withAcks()
			}
			label := fmt.Sprintf("[%s %s run %d]", scenario, name, run)
			load := loadAvg()
			var res *result
			switch scenario {
			case "fanout", "crossnode", scenarioSSEFanout:
				res, err = runFanout(ctx, cfg, tnc, t, label)
			case "rooms":
				res, err = runRooms(ctx, cfg, tnc, t, label, cfg.rooms)
			case scenarioReplicas:
				res, err = runRooms(ctx, cfg, tnc, t, label, cfg.replicaRooms)
				if err == nil {
					err = replicaParams(ctx, t, res)
				}
			case "idle", scenarioSSEIdle:
				res, err = runIdle(ctx, cfg, tnc, t, label)
			case "connect":
				res, err = runConnect(ctx, cfg, tnc, t, label)
			default:
				err = fmt.Errorf("unknown scenario %q", scenario)
			}
			t.stop()
			if err != nil {
				logf("%s: %v", label, err)
				res = &result{Target: name, Error: err.Error()}
			}
			res.Scenario, res.Run = scenario, run
			if res.Params != nil {
				res.Params["loadavg_before"], res.Params["loadavg_after"] = load, loadAvg()
				res.Params["transport"] = "websocket"
				if tnc.sse {
					res.Params["transport"] = "sse"
				}
			}
			out = append(out, res)
		}
	}
	return out, nil
}
