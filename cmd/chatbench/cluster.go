package main

// The cluster scenario: many people in rooms of -room-size over several
// chatterpro nodes on one Redis or on a Redis Cluster, the load generator
// split over worker processes. See runCluster for the phases.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chatterpro/chatterpro/internal/harness"
)

// maxClientsPerWorker keeps a worker well under the hard limit of 20 000
// open files of this kind of machine.
const maxClientsPerWorker = 12500

// clusterConfig holds the cluster scenario's flags (defaults in parseFlags).
type clusterConfig struct {
	nodes         int           // chatterpro processes (8)
	clients       int           // people, each with a session of its own (100 000)
	layer         string        // layerRedis or layerRedisCluster
	workers       int           // load generator processes; 0: one per maxClientsPerWorker
	steady        time.Duration // steady chat phase (60 s)
	rate          float64       // messages per room per second, steady and kill phases (0.2)
	ladder        string        // higher per-room rates, comma-separated ("0.5,1")
	ladderStep    time.Duration // length of each ladder step (30 s)
	idle          time.Duration // quiet window measuring presence upkeep (15 s)
	kill          bool          // SIGKILL the last node at the end (true)
	keepLogs      bool          // keep the folder of the processes' logs (false)
	presenceTTL   time.Duration // the nodes' --presence-ttl (30 s)
	maxConnecting int           // the nodes' --max-connecting (0: their default)
	redisNice     int           // the redis-servers' nice value (-10; 0: as started)
	profileDir    string        // CPU profiles of nodes and workers in the steady and kill phases ("": none)
	p99           time.Duration // a chat phase passes with p99 below this (250 ms)
	drain         time.Duration // wait for late deliveries after a chat phase (5 s)
	merge         string        // only render these JSON reports
}

// clusterReport is the cluster scenario's JSON output.
type clusterReport struct {
	Command string        `json:"command"`
	Date    string        `json:"date"`
	Machine machine       `json:"machine"`
	Runs    []*clusterRun `json:"runs"`
}

// clusterRun is one run of the scenario.
type clusterRun struct {
	Params  map[string]any     `json:"params"`
	Metrics map[string]float64 `json:"metrics"`
	// Nodes holds each node's connections and resident memory after presence converged.
	Nodes []clusterNode `json:"nodes"`
	// Steps are the steady phase (first) and the ladder of higher rates.
	Steps []clusterStep `json:"steps"`
	// Failures lists every correctness check that did not hold; empty
	// when the run passed them all. Timing targets are in Metrics only.
	Failures []string `json:"failures"`
	Error    string   `json:"error,omitempty"`
}

type clusterNode struct {
	Conns      int     `json:"conns"`
	RSSMiB     float64 `json:"rss_mib"`
	KiBPerConn float64 `json:"rss_kib_per_conn"`
}

// clusterStep is one chat phase at one per-room rate.
type clusterStep struct {
	Phase          string  `json:"phase"`
	RoomRate       float64 `json:"msgs_per_room_per_s"`
	MsgsPerSec     float64 `json:"msgs_per_s"`
	Sent           uint64  `json:"sent"`
	Acked          uint64  `json:"acked"`
	Deliveries     uint64  `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	// Lost counts acknowledged messages missing at a member when the
	// phase's drain ended; LostAtEnd those still missing when the run
	// ended (a late message is not lost).
	Lost        uint64  `json:"lost"`
	LostAtEnd   *uint64 `json:"lost_at_end,omitempty"`
	Dups        uint64  `json:"dups"`
	ErrFrames   uint64  `json:"error_frames"`
	SkippedDown uint64  `json:"skipped_down,omitempty"`
	SendErrors  uint64  `json:"send_errors,omitempty"`
	LeftNotices uint64  `json:"left_notices"`
	UsersFrames uint64  `json:"users_frames"` // users frames received while the rooms chat
	// Resets counts resumes the room could not serve from the client's
	// last message (history frames with reset set).
	Resets        uint64  `json:"resets,omitempty"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	P999ms        float64 `json:"p999_ms"`
	NodeCores     float64 `json:"node_cores"`
	RedisCores    float64 `json:"redis_cores"`
	LoadgenCores  float64 `json:"loadgen_cores"`
	NodeUsPerDel  float64 `json:"node_cpu_us_per_delivery"`
	RedisCmdsPerS float64 `json:"redis_cmds_per_s"`
	RedisTop      string  `json:"redis_top_commands,omitempty"`
	LoadAvg       string  `json:"loadavg"`
	Pass          bool    `json:"pass"`
}

// wproc is a running worker process.
type wproc struct {
	spec workerSpec
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan workerReply
	err     error
}

func startWorker(spec workerSpec) (*wproc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(spec)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), clusterWorkerEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &wproc{spec: spec, cmd: cmd, in: in, done: make(chan struct{}), waiting: map[int]chan workerReply{}}
	go w.read(out)
	return w, nil
}

func (w *wproc) read(out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var rep workerReply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			continue
		}
		w.mu.Lock()
		ch := w.waiting[rep.ID]
		delete(w.waiting, rep.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	_ = w.cmd.Wait()
	w.mu.Lock()
	w.err = fmt.Errorf("worker %d exited: %v", w.spec.Index, w.cmd.ProcessState)
	for id, ch := range w.waiting {
		ch <- workerReply{ID: id, Error: w.err.Error()}
		delete(w.waiting, id)
	}
	w.mu.Unlock()
}

// call sends a command and waits for its reply.
func (w *wproc) call(cmd workerCmd) workerReply {
	ch := make(chan workerReply, 1)
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return workerReply{Error: w.err.Error()}
	}
	w.nextID++
	cmd.ID = w.nextID
	w.waiting[cmd.ID] = ch
	b, _ := json.Marshal(cmd)
	_, err := w.in.Write(append(b, '\n'))
	w.mu.Unlock()
	if err != nil {
		return workerReply{Error: err.Error()}
	}
	return <-ch
}

func (w *wproc) stop() {
	done := make(chan struct{})
	go func() { w.call(workerCmd{Cmd: "close"}); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
	}
	w.in.Close()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

// callAll sends cmd to every worker at once and returns their replies.
func callAll(ws []*wproc, cmd workerCmd) ([]workerReply, error) {
	reps := make([]workerReply, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { reps[i] = w.call(cmd) })
	}
	wg.Wait()
	var errs []error
	for _, r := range reps {
		if r.Error != "" {
			errs = append(errs, errors.New(r.Error))
		}
	}
	return reps, errors.Join(errs...)
}

// clusterRig is what one run starts.
type clusterRig struct {
	cfg     *config
	layer   *redisLayer
	nodes   []*proc
	bases   []string
	rss0    []int64
	workers []*wproc
	dead    map[int]bool
	debug   []string // each node's --debug-addr, with -profile-dir
}

func (r *clusterRig) stop() {
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(w.stop)
	}
	wg.Wait()
	for _, p := range r.nodes {
		wg.Go(p.stop)
	}
	wg.Wait()
	if r.layer != nil {
		r.layer.stop()
	}
}

func (r *clusterRig) nodeCPU() time.Duration {
	var sum time.Duration
	for i, p := range r.nodes {
		if r.dead[i] {
			continue
		}
		if d, err := cpuTime(p.pid()); err == nil {
			sum += d
		}
	}
	return sum
}

func (r *clusterRig) loadgenCPU() time.Duration {
	sum := selfCPU()
	for _, w := range r.workers {
		if d, err := cpuTime(w.cmd.Process.Pid); err == nil {
			sum += d
		}
	}
	return sum
}

// cpuMark is the CPU the living nodes, Redis and the load generator had
// used at one moment.
type cpuMark struct{ nodes, redis, loadgen time.Duration }

func (r *clusterRig) cpuMark() cpuMark {
	return cpuMark{nodes: r.nodeCPU(), redis: r.layer.cpu(), loadgen: r.loadgenCPU()}
}

// coresSince returns the cores each used since m, over wall seconds.
func (r *clusterRig) coresSince(m cpuMark, wall float64) (nodes, redis, loadgen float64) {
	now := r.cpuMark()
	return (now.nodes - m.nodes).Seconds() / wall, (now.redis - m.redis).Seconds() / wall, (now.loadgen - m.loadgen).Seconds() / wall
}

// nodeMemory reads the nodes' RSS: per connection over all of them and
// on the worst node (above each node's RSS before the clients came), and
// each node's figures.
func (r *clusterRig) nodeMemory(cc *clusterConfig, connected int) (perConn, worst float64, nodes []clusterNode) {
	var sum int64
	for i, p := range r.nodes {
		b, _ := rssBytes(p.pid())
		conns := cc.conns(i)
		kib := float64(b-r.rss0[i]) / 1024 / float64(max(1, conns))
		nodes = append(nodes, clusterNode{Conns: conns, RSSMiB: float64(b) / (1 << 20), KiBPerConn: kib})
		sum += b - r.rss0[i]
		worst = max(worst, kib)
	}
	return float64(sum) / 1024 / float64(max(1, connected)), worst, nodes
}

func (r *clusterRig) alive() error {
	for i, p := range r.nodes {
		if !r.dead[i] && p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, p.tail())
		}
	}
	return r.layer.alive()
}

// conns returns how many clients start on each node.
func (c *clusterConfig) conns(node int) int {
	n := c.clients / c.nodes
	if node < c.clients%c.nodes {
		n++
	}
	return n
}

func parseLadder(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("-ladder: %q is not a positive rate", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// runClusterScenario runs the scenario once and writes its reports.
func runClusterScenario(ctx context.Context, cfg *config, args []string) (*clusterRun, error) {
	cc := &cfg.cluster
	if cc.merge != "" {
		rep, err := mergeClusterReports(strings.Split(cc.merge, ","))
		if err != nil {
			return nil, err
		}
		return nil, writeClusterReports(cfg, rep)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "chatbench-cluster-")
	if err != nil {
		return nil, err
	}
	if cfg.cluster.keepLogs {
		defer logf("cluster: the nodes' and Redis's logs are in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	run, err := runCluster(ctx, cfg, dir)
	if run == nil {
		return nil, err
	}
	if err != nil {
		run.Error = err.Error()
		run.Failures = append(run.Failures, "run ended early: "+strings.SplitN(err.Error(), "\n", 2)[0])
	}
	rep := &clusterReport{Command: shownCommand("chatbench " + strings.Join(args, " ")), Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Machine: readMachine(), Runs: []*clusterRun{run}}
	fmt.Println(rep.markdown())
	if werr := writeClusterReports(cfg, rep); werr != nil {
		return run, werr
	}
	if err != nil {
		return run, err
	}
	if len(run.Failures) > 0 {
		return run, fmt.Errorf("cluster: %d check(s) failed: %s", len(run.Failures), strings.Join(run.Failures, "; "))
	}
	return run, nil
}

func writeClusterReports(cfg *config, rep *clusterReport) error {
	if cfg.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if cfg.mdOut != "" {
		return rep.writeSection(cfg.mdOut)
	}
	return nil
}

func mergeClusterReports(paths []string) (*clusterReport, error) {
	out := &clusterReport{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Machine: readMachine()}
	var cmds []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r clusterReport
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out.Runs = append(out.Runs, r.Runs...)
		cmds = append(cmds, r.Command)
		out.Date = r.Date
	}
	out.Command = strings.Join(cmds, "`, `")
	return out, nil
}

// runCluster starts the layer, the nodes and the workers and runs the
// phases, each timed: connect and join; presence converges; idle (the
// cost of presence alone); steady chat; the ladder of higher rates; one
// node SIGKILLed while the chat goes on.
func runCluster(ctx context.Context, cfg *config, dir string) (*clusterRun, error) {
	cc := &cfg.cluster
	ladder, err := parseLadder(cc.ladder)
	if err != nil {
		return nil, err
	}
	roomSize := cc.clients / cfg.rooms
	if roomSize < 2 || cc.clients%cfg.rooms != 0 {
		return nil, fmt.Errorf("-clients %d must be a multiple of -rooms %d, at least 2 per room", cc.clients, cfg.rooms)
	}
	if cc.nodes < 2 && cc.kill {
		return nil, errors.New("killing a node needs at least 2 nodes (-nodes)")
	}
	workers := cc.workers
	if workers <= 0 {
		workers = (cc.clients + maxClientsPerWorker - 1) / maxClientsPerWorker
	}
	workers = min(max(workers, 1), cfg.rooms)
	limit := raiseFileLimit(1 << 20)
	perNode := cc.conns(0)
	if cc.kill {
		perNode = (cc.clients + cc.nodes - 2) / (cc.nodes - 1)
	}
	if need := uint64(perNode) + 500; need > limit {
		return nil, fmt.Errorf("a node would hold %d connections (after the kill), more than the open-file limit %d allows: use more -nodes", perNode, limit)
	}
	if need := uint64((cfg.rooms+workers-1)/workers*roomSize) + 500; need > limit {
		return nil, fmt.Errorf("a worker would hold %d connections, more than the open-file limit %d allows: use more -workers", need-500, limit)
	}
	run := &clusterRun{Params: map[string]any{
		"nodes": cc.nodes, "clients": cc.clients, "rooms": cfg.rooms, "room_size": roomSize, "layer": cc.layer,
		"workers": workers, "steady": cc.steady.String(), "rate_per_room": cc.rate, "ladder": cc.ladder,
		"ladder_step": cc.ladderStep.String(), "presence_ttl": cc.presenceTTL.String(), "max_connecting": cc.maxConnecting, "p99_limit_ms": ms(cc.p99),
		"idle_window": cc.idle.String(), "kill": cc.kill, "file_limit": limit, "source_ips": cfg.ips,
		"loadavg_before": loadAvg(),
	}, Metrics: map[string]float64{}}
	m := run.Metrics
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		logf("cluster: CHECK FAILED: %s", msg)
		run.Failures = append(run.Failures, msg)
	}

	bin, err := serverBinary(cfg, dir)
	if err != nil {
		return nil, err
	}
	rig := &clusterRig{cfg: cfg, dead: map[int]bool{}}
	defer rig.stop()
	logf("cluster: starting %s", cc.layer)
	if rig.layer, err = startRedisLayer(ctx, cfg, dir, cc.layer, cc.redisNice); err != nil {
		return nil, err
	}
	run.Params["redis_nice"] = rig.layer.nice
	for i := range cc.nodes {
		port, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := []string{"--addr", addr, "--layer", rig.layer.url, "--rate", "0", "--secret", benchSecret,
			"--presence-ttl", cc.presenceTTL.String(), "--log-level", "warn"}
		if cc.maxConnecting != 0 {
			args = append(args, "--max-connecting", strconv.Itoa(cc.maxConnecting))
		}
		if cc.profileDir != "" {
			dport, err := harness.FreePort()
			if err != nil {
				return nil, err
			}
			daddr := "127.0.0.1:" + strconv.Itoa(dport)
			args = append(args, "--debug-addr", daddr)
			rig.debug = append(rig.debug, daddr)
		}
		p, err := startProc(dir, fmt.Sprintf("chatterpro%d", i+1), bin, nil, args...)
		if err != nil {
			return nil, err
		}
		rig.nodes = append(rig.nodes, p)
		base := "http://" + addr
		if err := waitHTTP(ctx, p, base+"/readyz"); err != nil {
			return nil, err
		}
		rig.bases = append(rig.bases, base)
	}
	time.Sleep(startupSleep)
	for _, p := range rig.nodes {
		b, _ := rssBytes(p.pid())
		rig.rss0 = append(rig.rss0, b)
	}
	redisMem0 := rig.layer.usedMemory(ctx)
	per := cfg.rooms / workers
	first := 0
	for i := range workers {
		n := per
		if i < cfg.rooms%workers {
			n++
		}
		spec := workerSpec{Index: i, FirstRoom: first, Rooms: n, RoomSize: roomSize, Bases: rig.bases,
			Conc: max(1, cfg.conc/workers), SourceIPs: cfg.ips, IPOffset: i}
		first += n
		w, err := startWorker(spec)
		if err != nil {
			return run, err
		}
		rig.workers = append(rig.workers, w)
	}
	logf("cluster: %d nodes on %s, %d workers, %d clients in %d rooms of %d", cc.nodes, cc.layer, workers, cc.clients, cfg.rooms, roomSize)

	// Connect and join.
	cpu0, rcpu0 := rig.nodeCPU(), rig.layer.cpu()
	t0 := time.Now()
	reps, err := callAll(rig.workers, workerCmd{Cmd: "connect"})
	if err != nil {
		return run, err
	}
	t1 := time.Now()
	var joinHist histogram
	var connected, failed int
	var firstErr string
	for _, r := range reps {
		connected += r.Connected
		failed += r.Failed
		joinHist.mergeSparse(r.JoinHist)
		if firstErr == "" {
			firstErr = r.FirstErr
		}
	}
	connectS := t1.Sub(t0).Seconds()
	m["connected"], m["failed"] = float64(connected), float64(failed)
	m["connect_s"] = connectS
	m["joins_per_s"] = float64(connected) / connectS
	m["join_p50_ms"], m["join_p99_ms"] = ms(joinHist.quantile(0.5)), ms(joinHist.quantile(0.99))
	m["connect_node_cpu_us_per_join"] = float64((rig.nodeCPU() - cpu0).Microseconds()) / float64(max(1, connected))
	m["connect_redis_cpu_us_per_join"] = float64((rig.layer.cpu() - rcpu0).Microseconds()) / float64(max(1, connected))
	logf("cluster: connect: %d connected, %d failed in %.1f s (%.0f joins/s, p50 %.0f ms, p99 %.0f ms)", connected, failed, connectS, m["joins_per_s"], m["join_p50_ms"], m["join_p99_ms"])
	if failed > 0 {
		fail("%d of %d clients failed to connect (first: %s)", failed, cc.clients, firstErr)
	}
	if err := rig.alive(); err != nil {
		return run, err
	}

	// Presence converges: every client's latest users frame lists its room exactly.
	reps, err = callAll(rig.workers, workerCmd{Cmd: "presence", DeadlineNS: time.Now().Add(60*time.Second + time.Duration(cc.clients/200)*time.Second).UnixNano()})
	if err != nil {
		return run, err
	}
	pending, last, bad := presenceOf(reps)
	if pending == 0 {
		m["presence_converged_s"] = max(0, time.Unix(0, last).Sub(t1).Seconds())
		m["presence_converged_from_start_s"] = time.Unix(0, last).Sub(t0).Seconds()
	}
	m["presence_pending"] = float64(pending)
	logf("cluster: presence: converged %.1f s after the last join (%.1f s after the first), %d pending", m["presence_converged_s"], m["presence_converged_from_start_s"], pending)
	if pending > 0 {
		fail("presence did not converge for %d clients (%s)", pending, bad)
	}

	// Memory with everyone connected.
	var maxKiB float64
	m["rss_kib_per_conn"], maxKiB, run.Nodes = rig.nodeMemory(cc, connected)
	m["rss_kib_per_conn_max_node"] = maxKiB
	redisMem1 := rig.layer.usedMemory(ctx)
	m["redis_used_memory_mib"] = redisMem1 / (1 << 20)
	m["redis_kib_per_conn"] = (redisMem1 - redisMem0) / 1024 / float64(max(1, connected))
	m["redis_mib_per_1000_conns"] = (redisMem1 - redisMem0) / (1 << 20) / float64(max(1, connected)) * 1000
	logf("cluster: memory: nodes %.1f KiB per connection (worst node %.1f), Redis %.2f MiB per 1 000 connections", m["rss_kib_per_conn"], maxKiB, m["redis_mib_per_1000_conns"])

	// Idle: what presence (refresh, sweeps) costs with nobody talking.
	if cc.idle > 0 {
		mark, k0 := rig.cpuMark(), rig.layer.commands(ctx)
		calls0 := rig.layer.commandCalls(ctx)
		ti := time.Now()
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case <-time.After(cc.idle):
		}
		wall := time.Since(ti).Seconds()
		m["idle_node_cores"], m["idle_redis_cores"], m["idle_loadgen_cores"] = rig.coresSince(mark, wall)
		m["idle_redis_cmds_per_s"] = (rig.layer.commands(ctx) - k0) / wall
		run.Params["idle_redis_top_commands"] = topRates(calls0, rig.layer.commandCalls(ctx), wall, 6)
		k := float64(max(1, connected)) / 1000
		m["idle_node_cores_per_1000_conns"] = m["idle_node_cores"] / k
		m["idle_redis_cores_per_1000_conns"] = m["idle_redis_cores"] / k
		m["idle_redis_cmds_per_s_per_1000_conns"] = m["idle_redis_cmds_per_s"] / k
		logf("cluster: idle %s: nodes %.3f cores, Redis %.3f cores and %.0f commands/s (presence upkeep: %s), load generator %.3f cores",
			cc.idle, m["idle_node_cores"], m["idle_redis_cores"], m["idle_redis_cmds_per_s"], run.Params["idle_redis_top_commands"], m["idle_loadgen_cores"])
		// Memory again: the connect storm's garbage has had the idle
		// window to be collected and given back, as in the idle scenario.
		m["idle_rss_kib_per_conn"], m["idle_rss_kib_per_conn_max_node"], _ = rig.nodeMemory(cc, connected)
		logf("cluster: memory after the idle window: nodes %.1f KiB per connection (worst node %.1f)", m["idle_rss_kib_per_conn"], m["idle_rss_kib_per_conn_max_node"])
	}

	// Steady chat, then the ladder.
	rates := append([]float64{cc.rate}, ladder...)
	overloaded := false // the last ladder step failed
	for i, rate := range rates {
		if i > 0 && rate <= cc.rate {
			continue
		}
		phase, dur := "steady", cc.steady
		if i > 0 {
			phase, dur = "ladder", cc.ladderStep
		}
		mem0 := rig.layer.usedMemory(ctx)
		profiled := func() {}
		if i == 0 {
			profiled = rig.profile("steady", min(dur, 30*time.Second))
		}
		st, err := rig.chatPhase(ctx, phase, rate, dur, roomSize)
		profiled()
		if err != nil {
			return run, err
		}
		if i == 0 {
			msgs := st.MsgsPerSec / 1000
			m["steady_redis_cores_per_1000_msgs_per_s"] = max(0, st.RedisCores-m["idle_redis_cores"]) / msgs
			m["steady_node_cores_per_1000_msgs_per_s"] = max(0, st.NodeCores-m["idle_node_cores"]) / msgs
			m["steady_redis_memory_growth_mib"] = (rig.layer.usedMemory(ctx) - mem0) / (1 << 20)
			if st.Lost > 0 || st.Dups > 0 || st.Acked != st.Sent || st.Sent == 0 {
				fail("steady chat: %d sent, %d acknowledged, %d lost, %d duplicated", st.Sent, st.Acked, st.Lost, st.Dups)
			}
		}
		run.Steps = append(run.Steps, st)
		if st.Pass {
			m["highest_passing_rate_per_room"] = rate
			m["highest_passing_deliveries_per_s"] = st.DeliveriesPerS
		}
		if !st.Pass && i > 0 {
			overloaded = true
			break
		}
	}

	if cc.kill && overloaded {
		rig.settle(ctx, m, roomSize, fail)
	}
	if cc.kill {
		if err := rig.killPhase(ctx, run, roomSize, fail); err != nil {
			return run, err
		}
	}
	reps, err = callAll(rig.workers, workerCmd{Cmd: "recount"})
	if err != nil {
		return run, err
	}
	lost := phaseLost(reps)
	for i := range run.Steps {
		var n uint64
		if i < len(lost) {
			n = lost[i]
		}
		run.Steps[i].LostAtEnd = &n
		if n > 0 {
			fail("%s at %.2f/room/s: %d acknowledged deliveries still missing when the run ended", run.Steps[i].Phase, run.Steps[i].RoomRate, n)
		}
	}
	run.Params["loadavg_after"] = loadAvg()
	return run, nil
}

// settle waits, after a ladder step that failed (more load than the
// cluster keeps up with), until the cluster is back to normal before the
// kill is measured: every room's presence entries there, every client's
// latest users frame exact, and every acknowledged delivery of the chat
// phases in (a failed step leaves seconds of them queued, which a kill
// right after would be measured by). How long that took is reported; not
// getting there within two TTLs and a minute fails the run.
func (r *clusterRig) settle(ctx context.Context, m map[string]float64, roomSize int, fail func(string, ...any)) {
	cc := &r.cfg.cluster
	t0 := time.Now()
	deadline := t0.Add(2*cc.presenceTTL + time.Minute)
	entriesOK := false
	for !entriesOK && time.Now().Before(deadline) && ctx.Err() == nil {
		counts, err := r.layer.presenceEntries(ctx, r.cfg.rooms)
		entriesOK = err == nil && !slices.ContainsFunc(counts, func(n int64) bool { return n != int64(roomSize) })
		if !entriesOK {
			time.Sleep(500 * time.Millisecond)
		}
	}
	reps, err := callAll(r.workers, workerCmd{Cmd: "presence", DeadlineNS: deadline.UnixNano()})
	pending, _, bad := presenceOf(reps)
	if err != nil || !entriesOK || pending > 0 {
		fail("after the failed ladder step the cluster was not back to normal within %s (entries right: %v, clients with a wrong list: %d, %s; err %v)",
			time.Since(t0).Round(time.Second), entriesOK, pending, bad, err)
		return
	}
	presentAt := time.Since(t0)
	var missing uint64
	for {
		reps, err := callAll(r.workers, workerCmd{Cmd: "recount"})
		if err != nil {
			fail("after the failed ladder step: recount: %v", err)
			return
		}
		missing = 0
		for _, n := range phaseLost(reps) {
			missing += n
		}
		if missing == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if missing > 0 {
		fail("after the failed ladder step %d acknowledged deliveries were still missing %s later", missing, time.Since(t0).Round(time.Second))
		return
	}
	m["overload_recovered_s"] = time.Since(t0).Seconds()
	logf("cluster: after the failed ladder step, presence exact again in %.1f s, every acknowledged delivery in after %.1f s", presentAt.Seconds(), m["overload_recovered_s"])
}

// phaseLost sums the workers' recounts: per chat phase, the acknowledged
// deliveries still missing.
func phaseLost(reps []workerReply) []uint64 {
	var lost []uint64
	for _, rp := range reps {
		for i, n := range rp.PhaseLost {
			if i == len(lost) {
				lost = append(lost, 0)
			}
			lost[i] += n
		}
	}
	return lost
}

func presenceOf(reps []workerReply) (pending int, last int64, bad string) {
	for _, r := range reps {
		pending += r.Pending
		last = max(last, r.LastNS)
		if bad == "" {
			bad = r.Bad
		}
	}
	return pending, last, bad
}

// chatPhase has every room send at rate messages per second for dur and
// measures what arrived.
func (r *clusterRig) chatPhase(ctx context.Context, phase string, rate float64, dur time.Duration, roomSize int) (clusterStep, error) {
	cc := &r.cfg.cluster
	start := time.Now().Add(300 * time.Millisecond)
	end := start.Add(dur)
	mark, k0 := r.cpuMark(), r.layer.commands(ctx)
	calls0 := r.layer.commandCalls(ctx)
	logf("cluster: %s: %.2f messages per room per second for %s", phase, rate, dur)
	reps, err := callAll(r.workers, workerCmd{Cmd: "chat", Rate: rate, StartNS: start.UnixNano(), EndNS: end.UnixNano(), DrainNS: int64(cc.drain), LateNS: int64(cc.p99)})
	if err != nil {
		return clusterStep{}, err
	}
	wall := time.Since(start).Seconds()
	st := clusterStep{Phase: phase, RoomRate: rate, MsgsPerSec: rate * float64(r.cfg.rooms), LoadAvg: loadAvg()}
	st.NodeCores, st.RedisCores, st.LoadgenCores = r.coresSince(mark, wall)
	st.RedisCmdsPerS = (r.layer.commands(ctx) - k0) / wall
	st.RedisTop = topRates(calls0, r.layer.commandCalls(ctx), wall, 6)
	h := sumChat(&st, reps)
	st.DeliveriesPerS = float64(st.Deliveries) / dur.Seconds()
	if st.Deliveries > 0 {
		st.NodeUsPerDel = st.NodeCores * wall * 1e6 / float64(st.Deliveries)
	}
	st.P50ms, st.P99ms, st.P999ms = ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.quantile(0.999))
	st.Pass = st.Lost == 0 && st.Dups == 0 && st.Sent > 0 && st.Acked == st.Sent && st.ErrFrames == 0 && h.quantile(0.99) < cc.p99
	logDups(reps)
	logTail(phase, cc.p99, reps)
	logf("cluster: %s %.2f/room/s: %d sent, %d acked, %.0f deliveries/s, p50 %.1f ms p99 %.1f ms p999 %.1f ms, lost %d dup %d, %d users frames; nodes %.2f cores (%.2f µs/delivery), Redis %.2f cores, load generator %.2f cores; pass %v",
		phase, rate, st.Sent, st.Acked, st.DeliveriesPerS, st.P50ms, st.P99ms, st.P999ms, st.Lost, st.Dups, st.UsersFrames, st.NodeCores, st.NodeUsPerDel, st.RedisCores, st.LoadgenCores, st.Pass)
	return st, r.alive()
}

// logTail logs, for each second of a chat phase's sending window, the
// deliveries slower than late and the slowest, so that a tail that comes
// in bursts (every presence refresh, every collection) shows when.
func logTail(phase string, late time.Duration, reps []workerReply) {
	var lateBy []uint64
	var maxBy []int64
	for _, rp := range reps {
		for i, n := range rp.LateBySec {
			if i >= len(lateBy) {
				lateBy = append(lateBy, make([]uint64, i+1-len(lateBy))...)
				maxBy = append(maxBy, make([]int64, i+1-len(maxBy))...)
			}
			lateBy[i] += n
			if i < len(rp.MaxBySec) {
				maxBy[i] = max(maxBy[i], rp.MaxBySec[i])
			}
		}
	}
	if len(maxBy) == 0 {
		return
	}
	var b strings.Builder
	for i := range maxBy {
		fmt.Fprintf(&b, " %d:%d/%.0f", i, lateBy[i], float64(maxBy[i])/1e6)
	}
	logf("cluster: %s, by second of sending: deliveries over %s / slowest ms:%s", phase, late, b.String())
}

func sumChat(st *clusterStep, reps []workerReply) *histogram {
	var h histogram
	for _, rp := range reps {
		st.Sent += rp.Sent
		st.Acked += rp.Acked
		st.Deliveries += rp.Delivered
		st.Lost += rp.Lost
		st.Dups += rp.Dups
		st.ErrFrames += rp.ErrFrames
		st.SkippedDown += rp.SkippedDown
		st.SendErrors += rp.SendErrors
		st.LeftNotices += rp.LeftNotices
		st.UsersFrames += rp.UsersFrames
		st.Resets += rp.Resets
		h.mergeSparse(rp.Hist)
	}
	return &h
}

// profile writes CPU profiles of every living node and every worker over
// d to -profile-dir, named after phase; wait waits until they are written.
// Without -profile-dir it does nothing.
func (r *clusterRig) profile(phase string, d time.Duration) (wait func()) {
	dir := r.cfg.cluster.profileDir
	if dir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, addr := range r.debug {
		if r.dead[i] {
			continue
		}
		wg.Go(func() {
			path := filepath.Join(dir, fmt.Sprintf("%s-node%d.pprof", phase, i+1))
			if err := fetchProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())), path, d+30*time.Second); err != nil {
				logf("cluster: profile of node %d: %v", i+1, err)
			}
		})
	}
	for _, w := range r.workers {
		wg.Go(func() {
			path := filepath.Join(dir, fmt.Sprintf("%s-worker%d.pprof", phase, w.spec.Index+1))
			if rep := w.call(workerCmd{Cmd: "cpuprofile", Path: path, DurNS: int64(d)}); rep.Error != "" {
				logf("cluster: profile of worker %d: %s", w.spec.Index+1, rep.Error)
			}
		})
	}
	return wg.Wait
}

func fetchProfile(url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// killPhase SIGKILLs the last node while every room chats at the steady
// rate, and measures the way back: its clients reconnected elsewhere,
// its presence entries expired, every room listed exactly again, and no
// acknowledged message lost.
func (r *clusterRig) killPhase(ctx context.Context, run *clusterRun, roomSize int, fail func(string, ...any)) error {
	cc := &r.cfg.cluster
	m := run.Metrics
	victim := len(r.nodes) - 1
	lead := 5 * time.Second
	chatDur := lead + cc.presenceTTL + 10*time.Second
	start := time.Now().Add(300 * time.Millisecond)
	end := start.Add(chatDur)
	type chatOut struct {
		reps []workerReply
		err  error
	}
	chatDone := make(chan chatOut, 1)
	go func() {
		reps, err := callAll(r.workers, workerCmd{Cmd: "chat", Rate: cc.rate, StartNS: start.UnixNano(), EndNS: end.UnixNano(), DrainNS: int64(cc.drain), LateNS: int64(cc.p99)})
		chatDone <- chatOut{reps, err}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(start.Add(lead))):
	}
	logf("cluster: kill: SIGKILL %s (%d clients) while the rooms chat at %.2f/room/s", r.nodes[victim].name, cc.conns(victim), cc.rate)
	cmds0, reads0 := r.layer.trips(ctx)
	killAt := time.Now()
	r.dead[victim] = true
	mark := r.cpuMark() // the living nodes'
	_ = r.nodes[victim].cmd.Process.Signal(syscall.SIGKILL)
	if _, err := callAll(r.workers, workerCmd{Cmd: "kill-node", Node: victim}); err != nil {
		return err
	}
	defer r.profile("kill", min(30*time.Second, cc.presenceTTL+10*time.Second))()
	// Every client of the dead node back on another one.
	reps, err := callAll(r.workers, workerCmd{Cmd: "recovery", Node: victim, AfterNS: killAt.UnixNano(), DeadlineNS: killAt.Add(reconnectFor).UnixNano()})
	if err != nil {
		return err
	}
	wall := time.Since(killAt).Seconds()
	m["kill_node_cores"], m["kill_redis_cores"], m["kill_loadgen_cores"] = r.coresSince(mark, wall)
	logf("cluster: kill: until then cores: Redis %.2f, nodes %.2f, load generator %.2f", m["kill_redis_cores"], m["kill_node_cores"], m["kill_loadgen_cores"])
	if cmds1, reads1 := r.layer.trips(ctx); reads1 > reads0 {
		m["kill_redis_cmds"], m["kill_redis_reads"] = cmds1-cmds0, reads1-reads0
		logf("cluster: kill: until then Redis ran %.0f commands in %.0f reads (round trips; %.1f commands each)", cmds1-cmds0, reads1-reads0, (cmds1-cmds0)/(reads1-reads0))
	}
	var dropped, back, gaveUp, stillDown int
	var lastBack, attempts int64
	var backHist histogram
	losses := map[int]int{}
	failed := map[string]int64{}
	for _, rp := range reps {
		dropped += rp.Dropped
		back += rp.Back
		gaveUp += rp.GaveUp
		stillDown += rp.StillDown
		lastBack = max(lastBack, rp.LastBack)
		backHist.mergeSparse(rp.BackHist)
		attempts += rp.Attempts
		for why, n := range rp.FailedBy {
			failed[why] += n
		}
		for code, n := range rp.Losses {
			losses[code] += n
		}
	}
	// Sockets lost since the run began, the dead node's among them: any
	// other loss is a living node closing sockets (or the load generator
	// falling behind), which the presence checks below would feel.
	lost := 0
	for _, n := range losses {
		lost += n
	}
	m["kill_sockets_lost"], m["kill_still_down"] = float64(lost), float64(stillDown)
	logf("cluster: kill: %d sockets lost since the start (by close code, -1 without one: %v), %d clients down when the last came back", lost, losses, stillDown)
	m["kill_clients_dropped"], m["kill_clients_back"] = float64(dropped), float64(back)
	m["kill_reconnect_attempts"] = float64(attempts)
	if back > 0 {
		m["kill_all_back_s"] = time.Unix(0, lastBack).Sub(killAt).Seconds()
	}
	logf("cluster: kill: %d of %d dropped clients back on other nodes %.1f s after the kill (%d attempts; failed, by why: %v)", back, dropped, m["kill_all_back_s"], attempts, failed)
	for why, n := range failed {
		m["kill_attempts_failed_"+strings.ReplaceAll(why, " ", "_")] = float64(n)
	}
	if back > 0 {
		m["kill_back_p50_s"] = backHist.quantile(0.5).Seconds()
		m["kill_back_p90_s"] = backHist.quantile(0.9).Seconds()
		m["kill_back_p99_s"] = backHist.quantile(0.99).Seconds()
		logf("cluster: kill: half of those back %.1f s after the kill, 90 %% %.1f s, 99 %% %.1f s", m["kill_back_p50_s"], m["kill_back_p90_s"], m["kill_back_p99_s"])
	}
	// dropped counts the clients on the node when it died: those that
	// started there and were never moved, and any that moved there.
	if dropped == 0 || back != dropped {
		fail("after the kill %d clients dropped (the node started with %d), %d came back on other nodes, %d gave up", dropped, cc.conns(victim), back, gaveUp)
	}
	// The dead node's presence entries gone: each room's presence hash
	// holds one entry per connected member.
	limit := cc.presenceTTL + 10*time.Second
	var goneAt time.Time
	var counts []int64
	for {
		counts, err = r.layer.presenceEntries(ctx, r.cfg.rooms)
		if err == nil && !slices.ContainsFunc(counts, func(n int64) bool { return n != int64(roomSize) }) {
			goneAt = time.Now()
			break
		}
		if time.Since(killAt) > limit+20*time.Second || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if goneAt.IsZero() {
		wrong, lo, hi := 0, int64(roomSize), int64(roomSize)
		for _, n := range counts {
			if n != int64(roomSize) {
				wrong++
			}
			lo, hi = min(lo, n), max(hi, n)
		}
		fail("the dead node's presence entries were not all gone %s after the kill (%d rooms with another count than %d, from %d to %d; err %v)", time.Since(killAt).Round(time.Second), wrong, roomSize, lo, hi, err)
		if byProc, err := r.layer.entriesByProcess(ctx, r.cfg.rooms); err == nil {
			logf("cluster: kill: presence entries by node process (%d clients; each living node started with %d): %v", cc.clients, cc.conns(0), byProc)
		}
	} else {
		m["kill_entries_gone_s"] = goneAt.Sub(killAt).Seconds()
		logf("cluster: kill: the dead node's presence entries gone %.1f s after the kill", m["kill_entries_gone_s"])
	}
	// Presence converged again: every client's latest users frame lists
	// its room exactly (a client back on another node counts only the
	// frames of its new socket). A node sends a room's frame only when it
	// changed, so a person back before the dead entry expired, under the
	// same session, may bring no new frame to the others: what they see is
	// already right, and the entries check above proved the dead node's
	// entries gone.
	reps, err = callAll(r.workers, workerCmd{Cmd: "presence", DeadlineNS: killAt.Add(limit + 20*time.Second).UnixNano()})
	if err != nil {
		return err
	}
	pending, last, bad := presenceOf(reps)
	if pending == 0 {
		m["kill_presence_converged_s"] = max(0, time.Unix(0, last).Sub(killAt).Seconds())
	}
	m["kill_presence_pending"] = float64(pending)
	logf("cluster: kill: presence listed every room exactly %.1f s after the kill, %d pending", m["kill_presence_converged_s"], pending)
	if pending > 0 {
		fail("after the kill presence did not converge for %d clients (%s)", pending, bad)
	}
	var out chatOut
	select {
	case <-ctx.Done():
		return ctx.Err()
	case out = <-chatDone:
	}
	if out.err != nil {
		return out.err
	}
	st := clusterStep{Phase: "kill", RoomRate: cc.rate, MsgsPerSec: cc.rate * float64(r.cfg.rooms), LoadAvg: loadAvg()}
	h := sumChat(&st, out.reps)
	st.DeliveriesPerS = float64(st.Deliveries) / chatDur.Seconds()
	st.P50ms, st.P99ms, st.P999ms = ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(h.quantile(0.999))
	st.Pass = st.Lost == 0 && st.Dups == 0 && st.Acked > 0
	run.Steps = append(run.Steps, st)
	m["kill_lost"], m["kill_dups"], m["kill_unacked"] = float64(st.Lost), float64(st.Dups), float64(st.Sent-st.Acked)
	m["kill_left_notices"] = float64(st.LeftNotices)
	m["kill_resets"] = float64(st.Resets)
	logf("cluster: kill: chat during the kill: %d sent, %d acknowledged, %d skipped (sender down), lost %d, dup %d, p99 %.1f ms, %d \"has left\" notices",
		st.Sent, st.Acked, st.SkippedDown, st.Lost, st.Dups, st.P99ms, st.LeftNotices)
	if st.Lost > 0 || st.Dups > 0 || st.Acked == 0 {
		fail("chat during the kill: %d acknowledged, %d lost, %d duplicated", st.Acked, st.Lost, st.Dups)
	}
	logDups(out.reps)
	logTail("kill", cc.p99, out.reps)
	return r.alive()
}

// logDups logs the workers' descriptions of the duplicates of a phase.
func logDups(reps []workerReply) {
	for _, rp := range reps {
		for _, d := range rp.DupSamples {
			logf("cluster: duplicate: %s", d)
		}
	}
}
