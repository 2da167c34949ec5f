package main

// The cluster scenario's load generator runs in several worker processes,
// each holding whole rooms, so that no process needs more open files than
// the hard limit allows. A worker is chatbench re-executed with
// clusterWorkerEnv set to its workerSpec; it reads one command per line of
// JSON on stdin and answers each with one line of JSON on stdout.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// clusterWorkerEnv holds a worker's workerSpec as JSON.
const clusterWorkerEnv = "CHATBENCH_CLUSTER_WORKER"

// Reconnection backoff of the cluster scenario's clients: capped
// exponential with full jitter (attempt n sleeps a uniform time in
// [0, min(backoffCap, backoffBase<<n))).
const (
	backoffBase = 250 * time.Millisecond
	backoffCap  = 8 * time.Second
	// reconnectFor bounds how long a client keeps trying to come back.
	reconnectFor = 3 * time.Minute
	histShards   = 64
)

// workerSpec is what one worker holds: rooms [FirstRoom, FirstRoom+Rooms)
// of RoomSize members each; member m of room r is client r*RoomSize+m and
// connects first to node (client id) % len(Bases).
type workerSpec struct {
	Index     int      `json:"index"`
	FirstRoom int      `json:"first_room"`
	Rooms     int      `json:"rooms"`
	RoomSize  int      `json:"room_size"`
	Bases     []string `json:"bases"`
	Conc      int      `json:"conc"`
	SourceIPs int      `json:"source_ips"`
	IPOffset  int      `json:"ip_offset"`
}

// workerCmd is one command to a worker.
type workerCmd struct {
	// ID is echoed in the reply: commands run concurrently.
	ID int `json:"id"`
	// Cmd is connect, presence, recovery, chat, kill-node or close.
	Cmd string `json:"cmd"`
	// Presence, recovery: give up at DeadlineNS (Unix ns).
	DeadlineNS int64 `json:"deadline_ns,omitempty"`
	// Recovery: clients that lost their socket at or after AfterNS (Unix ns).
	AfterNS int64 `json:"after_ns,omitempty"`
	// Chat: per-room rate, sending window and drain.
	Rate    float64 `json:"rate,omitempty"`
	StartNS int64   `json:"start_ns,omitempty"`
	EndNS   int64   `json:"end_ns,omitempty"`
	DrainNS int64   `json:"drain_ns,omitempty"`
	// LateNS: chat deliveries slower than this are counted per second
	// of the phase (workerReply.LateBySec).
	LateNS int64 `json:"late_ns,omitempty"`
	// Node is the index of a base the coordinator killed: its clients may
	// no longer pick it when they reconnect.
	Node int `json:"node,omitempty"`
	// Cpuprofile: write the worker's CPU profile over DurNS to Path.
	Path  string `json:"path,omitempty"`
	DurNS int64  `json:"dur_ns,omitempty"`
}

// workerReply is a worker's answer; which fields are set depends on the command.
type workerReply struct {
	ID    int    `json:"id"`
	Error string `json:"error,omitempty"`

	// connect
	Connected int        `json:"connected"`
	Failed    int        `json:"failed"`
	FirstErr  string     `json:"first_error,omitempty"`
	JoinHist  sparseHist `json:"join_hist"`

	// presence
	Converged int    `json:"converged"`
	Pending   int    `json:"pending"`
	LastNS    int64  `json:"last_ns"`
	Bad       string `json:"bad,omitempty"` // one pending client's latest users frame, shortened

	// recovery
	Dropped  int   `json:"dropped"`
	Back     int   `json:"back"`
	GaveUp   int   `json:"gave_up"`
	LastBack int64 `json:"last_back_ns"`
	// BackHist holds the time from the kill to each dropped client's
	// return, for how the storm drains (half back, 90 %, 99 %).
	BackHist sparseHist `json:"back_hist"`
	Attempts int64      `json:"attempts"`
	// FailedBy counts the attempts that failed, by why (see failure).
	FailedBy  map[string]int64 `json:"failed_by,omitempty"`
	StillDown int              `json:"still_down"`
	// Losses counts the sockets lost so far, by close code (-1: no
	// close frame), the dead node's included.
	Losses map[int]int `json:"losses,omitempty"`

	// chat
	Sent        uint64 `json:"sent"`
	SkippedDown uint64 `json:"skipped_down"`
	SendErrors  uint64 `json:"send_errors"`
	Acked       uint64 `json:"acked"`
	Expected    uint64 `json:"expected"`
	Delivered   uint64 `json:"delivered"`
	Lost        uint64 `json:"lost"`
	Dups        uint64 `json:"dups"`
	// DupSamples describe the first duplicates since the phase began
	// (at most maxDupSamples): who got which message twice, and how.
	DupSamples  []string   `json:"dup_samples,omitempty"`
	ErrFrames   uint64     `json:"error_frames"`
	LeftNotices uint64     `json:"left_notices"`
	UsersFrames uint64     `json:"users_frames"`
	Resets      uint64     `json:"resets"`
	Hist        sparseHist `json:"hist"`
	// LateBySec and MaxBySec are, for each second of the sending window
	// (by scheduled send time), the deliveries slower than LateNS and the
	// slowest delivery (ns): where in time the tail is.
	LateBySec []uint64 `json:"late_by_sec,omitempty"`
	MaxBySec  []int64  `json:"max_by_sec,omitempty"`

	// recount: each chat phase's acknowledged messages still missing.
	PhaseLost []uint64 `json:"phase_lost,omitempty"`
}

// sparseHist is a histogram's non-empty buckets, for the trip between processes.
type sparseHist struct {
	Buckets map[int]uint64 `json:"b,omitempty"`
	N       uint64         `json:"n"`
	Max     int64          `json:"max"`
	Sum     float64        `json:"sum"`
}

func (h *histogram) sparse() sparseHist {
	s := sparseHist{Buckets: map[int]uint64{}, N: h.n, Max: h.max, Sum: h.sum}
	for i, c := range h.counts {
		if c > 0 {
			s.Buckets[i] = c
		}
	}
	return s
}

func (h *histogram) mergeSparse(s sparseHist) {
	for i, c := range s.Buckets {
		if i >= 0 && i < histBuckets {
			h.counts[i] += c
		}
	}
	h.n += s.N
	h.sum += s.Sum
	h.max = max(h.max, s.Max)
}

// wroom is one room of a worker.
type wroom struct {
	id      int
	members []*wmember

	mu    sync.Mutex
	next  uint32   // index of the room's next message
	sent  []uint64 // bitset of message indices sent
	acked []uint64 // bitset of message indices whose sender got its copy back
}

// sender returns the member that sends message k of the room: it rotates,
// so every node carries senders.
func (r *wroom) sender(k uint32) *wmember {
	return r.members[(int(k)*7+r.id)%len(r.members)]
}

func setBit(b *[]uint64, k uint32) bool {
	w := int(k / 64)
	if w >= len(*b) {
		nb := make([]uint64, max(w+1, 2*len(*b)))
		copy(nb, *b)
		*b = nb
	}
	bit := uint64(1) << (k % 64)
	was := (*b)[w]&bit != 0
	(*b)[w] |= bit
	return was
}

func hasBit(b []uint64, k uint32) bool {
	w := int(k / 64)
	return w < len(b) && b[w]&(1<<(k%64)) != 0
}

// wmember is one client: a person with a session, in one room, on one node
// at a time.
type wmember struct {
	w      *worker
	id     int
	name   string
	room   *wroom
	cookie string

	mu         sync.Mutex
	ws         *websocket.Conn
	node       int
	lastID     string
	seen       []uint64 // bitset of the room's message indices received
	dups       uint64
	usersOK    bool  // the latest users frame lists the room exactly
	exactAt    int64 // when usersOK last became true (Unix ns): a frame that lists the room as the one before did changes nothing the client sees
	up         bool
	downAt     int64 // when the socket was last lost (Unix ns)
	backAt     int64 // when it was last back (history frame received)
	gaveUp     bool
	usersFrame string // what was wrong with the latest users frame not exact
}

// worker runs one worker process's clients.
type worker struct {
	spec  workerSpec
	nc    *netClient
	rooms []*wroom
	all   []*wmember

	ctx     context.Context
	cancel  context.CancelFunc
	closing atomic.Bool
	wg      sync.WaitGroup // read loops and reconnections

	measureFrom atomic.Int64 // live deliveries of messages scheduled earlier are not timed
	histMu      [histShards]sync.Mutex
	hists       [histShards]histogram
	tail        atomic.Pointer[tailSeries] // the chat phase's, or nil

	dupMu      sync.Mutex
	dupSamples []string // see workerReply.DupSamples

	errFrames   atomic.Uint64
	resets      atomic.Uint64 // history frames with reset set
	leftNotices atomic.Uint64
	usersFrames atomic.Uint64 // users frames received live
	attempts    atomic.Int64
	failedMu    sync.Mutex
	failed      map[string]int64 // reconnect attempts that failed, by failure
	deadNodes   sync.Map         // node index -> true

	victimsMu sync.Mutex
	victims   []*wmember // the clients of the node killed last

	lossesMu sync.Mutex
	losses   map[int]int // sockets lost, by close code

	usersMu    sync.Mutex
	usersCache map[string]string

	phasesMu sync.Mutex
	phases   [][2][]uint32 // each chat command's first and next message index per room
}

func newWorker(spec workerSpec) *worker {
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{spec: spec, ctx: ctx, cancel: cancel, usersCache: map[string]string{}}
	w.nc = newNetClient(spec.SourceIPs)
	w.nc.next.Store(uint32(spec.IPOffset))
	for r := range spec.Rooms {
		room := &wroom{id: spec.FirstRoom + r}
		for m := range spec.RoomSize {
			id := room.id*spec.RoomSize + m
			mb := &wmember{w: w, id: id, name: "m" + strconv.Itoa(id), room: room, node: id % len(spec.Bases)}
			room.members = append(room.members, mb)
			w.all = append(w.all, mb)
		}
		w.rooms = append(w.rooms, room)
	}
	return w
}

// runWorker serves commands on stdin until close or end of input.
func runWorker(specJSON string) error {
	var spec workerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("worker spec: %w", err)
	}
	if spec.Rooms < 1 || spec.RoomSize < 1 || len(spec.Bases) == 0 {
		return errors.New("worker spec: no rooms, members or nodes")
	}
	limit := raiseFileLimit(1 << 20)
	if need := uint64(spec.Rooms*spec.RoomSize) + 200; limit < need {
		return fmt.Errorf("worker %d: %d clients need about %d open files, the limit is %d: use more -workers", spec.Index, spec.Rooms*spec.RoomSize, need, limit)
	}
	w := newWorker(spec)
	defer w.shutdown()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	var outMu sync.Mutex
	var cmds sync.WaitGroup
	defer cmds.Wait()
	for in.Scan() {
		var cmd workerCmd
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			return err
		}
		if cmd.Cmd == "close" {
			w.shutdown()
			cmds.Wait()
			outMu.Lock()
			defer outMu.Unlock()
			return out.Encode(workerReply{ID: cmd.ID})
		}
		cmds.Add(1)
		go func() {
			defer cmds.Done()
			rep := w.do(cmd)
			rep.ID = cmd.ID
			outMu.Lock()
			defer outMu.Unlock()
			if err := out.Encode(rep); err != nil {
				w.logf("writing a reply: %v", err)
			}
		}()
	}
	return in.Err()
}

func (w *worker) logf(format string, args ...any) {
	logf("[worker %d] "+format, append([]any{w.spec.Index}, args...)...)
}

func (w *worker) do(cmd workerCmd) workerReply {
	switch cmd.Cmd {
	case "connect":
		return w.connect()
	case "presence":
		return w.presence(cmd)
	case "recovery":
		return w.recovery(cmd)
	case "chat":
		return w.chat(cmd)
	case "recount":
		// What each chat phase's acknowledged messages missed by now, however
		// late they came.
		w.phasesMu.Lock()
		phases := slices.Clone(w.phases)
		w.phasesMu.Unlock()
		var rep workerReply
		for _, ph := range phases {
			c := w.account(ph[0], ph[1])
			rep.PhaseLost = append(rep.PhaseLost, c.Lost)
		}
		return rep
	case "cpuprofile":
		if err := w.cpuProfile(cmd.Path, time.Duration(cmd.DurNS)); err != nil {
			return workerReply{Error: err.Error()}
		}
		return workerReply{}
	case "kill-node":
		w.deadNodes.Store(cmd.Node, true)
		w.victimsMu.Lock()
		w.victims = w.victims[:0]
		for _, m := range w.all {
			m.mu.Lock()
			if m.node == cmd.Node {
				w.victims = append(w.victims, m)
			}
			m.mu.Unlock()
		}
		w.victimsMu.Unlock()
		return workerReply{Dropped: len(w.victims)}
	}
	return workerReply{Error: "unknown command " + cmd.Cmd}
}

// cpuProfile writes the worker's CPU profile over d to path.
func (w *worker) cpuProfile(path string, d time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("worker %d: %w", w.spec.Index, err)
	}
	select {
	case <-w.ctx.Done():
	case <-time.After(d):
	}
	pprof.StopCPUProfile()
	return f.Close()
}

// shutdown closes every socket normally (so that no client reconnects and
// the nodes see people leave), then ends the worker's goroutines.
func (w *worker) shutdown() {
	if !w.closing.CompareAndSwap(false, true) {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, m := range w.all {
		m.mu.Lock()
		ws := m.ws
		m.mu.Unlock()
		if ws == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			ws.Close(websocket.StatusNormalClosure, "")
			<-sem
		}()
	}
	wg.Wait()
	w.cancel()
	// Read loops wait on their sockets alone (no context: watching one
	// costs every read a callback), so a socket opened meanwhile is cut here.
	for _, m := range w.all {
		m.mu.Lock()
		ws := m.ws
		m.mu.Unlock()
		if ws != nil {
			ws.CloseNow()
		}
	}
	w.wg.Wait()
	w.nc.close()
}

// connect joins every client (POST /join, then the room's websocket) with
// the worker's concurrency; a client is tried three times.
func (w *worker) connect() workerReply {
	var (
		next atomic.Int64
		rep  workerReply
		mu   sync.Mutex
		wg   sync.WaitGroup
		h    histogram
	)
	for range max(1, w.spec.Conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(w.all) || w.ctx.Err() != nil {
					return
				}
				m := w.all[i]
				var err error
				t0 := time.Now()
				for attempt := range 3 {
					if attempt > 0 {
						time.Sleep(time.Duration(rand.Int64N(int64(backoffBase << attempt))))
					}
					if err = m.join(w.ctx); err == nil {
						break
					}
				}
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					rep.Failed++
					if rep.FirstErr == "" {
						rep.FirstErr = fmt.Sprintf("client %d: %v", m.id, err)
					}
				} else {
					rep.Connected++
					h.record(took)
				}
				done := rep.Connected + rep.Failed
				mu.Unlock()
				if done%max(500, len(w.all)/5) == 0 {
					w.logf("%d/%d connected", done, len(w.all))
				}
			}
		}()
	}
	wg.Wait()
	rep.JoinHist = h.sparse()
	return rep
}

// join logs the client in and opens its socket on its first node.
func (m *wmember) join(ctx context.Context) error {
	base := m.w.spec.Bases[m.node]
	form := url.Values{"nickname": {m.name}, "room": {roomName(m.room.id)}}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(jctx, http.MethodPost, base+"/join", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := m.w.nc.hc.Do(req)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("join: status %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "chatterpro_session" {
			m.cookie = c.Name + "=" + c.Value
		}
	}
	if m.cookie == "" {
		return errors.New("join: no session cookie")
	}
	return m.open(jctx, m.node)
}

func roomName(id int) string { return "cluster-" + strconv.Itoa(id) }

// open dials node's websocket for the client's room, resuming after the
// last message it has, and handles the history frame; then it reads on.
func (m *wmember) open(ctx context.Context, node int) error {
	m.mu.Lock()
	since := m.lastID
	m.mu.Unlock()
	base := m.w.spec.Bases[node]
	u := roomWS(base, roomName(m.room.id))
	if since != "" {
		u += "?since=" + url.QueryEscape(since)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, err := dialRoom(dctx, m.w.nc.hc, u, m.cookie)
	if err != nil {
		return err
	}
	ws.SetReadLimit(4 << 20)
	_, first, err := ws.Read(dctx)
	if err != nil {
		ws.CloseNow()
		return fmt.Errorf("first frame: %w", err)
	}
	if !bytes.HasPrefix(first, []byte(`{"type":"history"`)) {
		ws.CloseNow()
		return fmt.Errorf("first frame is not history: %.80s", first)
	}
	m.history(first)
	now := time.Now().UnixNano()
	m.mu.Lock()
	m.ws, m.node, m.up, m.backAt = ws, node, true, now
	m.usersOK = false // its view is the frames of this socket
	m.mu.Unlock()
	if m.w.ctx.Err() != nil {
		ws.CloseNow() // shutdown may have looked at m.ws before it was set
	}
	m.w.wg.Add(1)
	go m.readLoop(ws)
	return nil
}

// maxDupSamples bounds the duplicates a worker describes per phase.
const maxDupSamples = 5

// history records the messages of a history frame as delivered (not timed).
func (m *wmember) history(f []byte) {
	var h struct {
		Messages []struct {
			ID   string `json:"id"`
			Text string `json:"text"`
		} `json:"messages"`
		Reset bool `json:"reset"`
	}
	if json.Unmarshal(f, &h) != nil {
		return
	}
	if h.Reset {
		// The room no longer keeps the client's last message: the frame
		// carries the latest ones, some perhaps seen already, and says so.
		m.w.resets.Add(1)
	}
	for _, msg := range h.Messages {
		if room, k, _, ok := parseText([]byte(`"text":"` + msg.Text + `"`)); ok {
			if h.Reset {
				m.mu.Lock()
				seen := hasBit(m.seen, k)
				m.mu.Unlock()
				if seen {
					continue
				}
			}
			m.deliver(room, k, msg.ID, 0)
		} else if msg.ID != "" {
			m.mu.Lock()
			m.lastID = msg.ID
			m.mu.Unlock()
		}
	}
}

// deliver records message k of room, received live at now (Unix ns) or,
// with now 0, in a history frame.
func (m *wmember) deliver(room, k uint32, id string, sched int64) {
	if int(room) != m.room.id {
		return
	}
	m.mu.Lock()
	dup := setBit(&m.seen, k)
	if dup {
		m.dups++
	}
	last := m.lastID
	if id != "" {
		m.lastID = id
	}
	node := m.node
	m.mu.Unlock()
	if dup {
		how := "live"
		if sched == 0 {
			how = "in a history frame"
		}
		m.w.dupMu.Lock()
		if len(m.w.dupSamples) < maxDupSamples {
			m.w.dupSamples = append(m.w.dupSamples, fmt.Sprintf("client %d (node %d) got message %d of room %d again %s, id %s, its last id before %s", m.id, node+1, k, room, how, id, last))
		}
		m.w.dupMu.Unlock()
	}
	if m.room.sender(k) == m {
		m.room.mu.Lock()
		setBit(&m.room.acked, k)
		m.room.mu.Unlock()
	}
	if sched > 0 && !dup && sched >= m.w.measureFrom.Load() {
		s := m.id % histShards
		m.w.histMu[s].Lock()
		took := time.Now().UnixNano() - sched
		m.w.hists[s].record(time.Duration(took))
		m.w.histMu[s].Unlock()
		if t := m.w.tail.Load(); t != nil {
			t.record(sched, took)
		}
	}
}

// tailSeries counts, per second of a chat phase's sending window, the
// deliveries slower than late and the slowest one.
type tailSeries struct {
	from, late int64 // Unix ns, ns
	late1      []atomic.Uint64
	max1       []atomic.Int64
}

func newTailSeries(from, to, late int64) *tailSeries {
	n := max((to-from+int64(time.Second)-1)/int64(time.Second), 1)
	return &tailSeries{from: from, late: late, late1: make([]atomic.Uint64, n), max1: make([]atomic.Int64, n)}
}

func (t *tailSeries) record(sched, took int64) {
	if sched < t.from {
		return
	}
	i := (sched - t.from) / int64(time.Second)
	if i >= int64(len(t.max1)) {
		return
	}
	if t.late > 0 && took > t.late {
		t.late1[i].Add(1)
	}
	for {
		old := t.max1[i].Load()
		if took <= old || t.max1[i].CompareAndSwap(old, took) {
			return
		}
	}
}

func (t *tailSeries) report(rep *workerReply) {
	rep.LateBySec = make([]uint64, len(t.late1))
	rep.MaxBySec = make([]int64, len(t.max1))
	for i := range t.late1 {
		rep.LateBySec[i], rep.MaxBySec[i] = t.late1[i].Load(), t.max1[i].Load()
	}
}

var (
	idPrefix  = []byte(`{"id":"`)
	typeUsers = []byte(`"type":"users"`)
	typeNote  = []byte(`"type":"notice"`)
	leftText  = []byte(`has left the chat`)
)

func (m *wmember) readLoop(ws *websocket.Conn) {
	defer m.w.wg.Done()
	var buf []byte
	var err error
	for {
		var r io.Reader
		_, r, err = ws.Reader(context.Background()) // shutdown closes the socket
		if err != nil {
			break
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			var n int
			n, err = r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				break
			}
		}
		if err != io.EOF {
			break
		}
		m.handle(buf)
	}
	if !m.w.closing.Load() && m.w.ctx.Err() == nil {
		m.w.lossesMu.Lock()
		if m.w.losses == nil {
			m.w.losses = make(map[int]int)
		}
		m.w.losses[int(websocket.CloseStatus(err))]++
		m.w.lossesMu.Unlock()
	}
	m.mu.Lock()
	m.up = false
	m.downAt = time.Now().UnixNano()
	m.mu.Unlock()
	ws.CloseNow()
	if m.w.closing.Load() || m.w.ctx.Err() != nil {
		return
	}
	m.w.wg.Add(1)
	go m.reconnect()
}

// refusedError is a websocket handshake answered with another status
// than 101.
type refusedError struct {
	status int
	err    error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("websocket: answered %d: %v", e.status, e.err)
}
func (e *refusedError) Unwrap() error { return e.err }

// dialRoom opens a room's websocket as the client with cookie; a
// handshake answered with another status than 101 is a *refusedError.
func dialRoom(ctx context.Context, hc *http.Client, u, cookie string) (*websocket.Conn, error) {
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      hc,
		HTTPHeader:      http.Header{"Cookie": {cookie}},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &refusedError{resp.StatusCode, err}
		}
		return nil, fmt.Errorf("websocket: %w", err)
	}
	return ws, nil
}

// failure names why a reconnect attempt failed, for the kill's report:
// the handshake's status ("503": the node was busy), a deadline, or
// another error, by the first words of its text.
func failure(err error) string {
	var refused *refusedError
	switch {
	case errors.As(err, &refused):
		return strconv.Itoa(refused.status)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case strings.HasPrefix(err.Error(), "first frame"):
		return "first frame"
	}
	return "other"
}

// reconnect brings a client whose socket was lost back on another node,
// with capped exponential backoff and full jitter, resuming after its last
// message.
func (m *wmember) reconnect() {
	defer m.w.wg.Done()
	deadline := time.Now().Add(reconnectFor)
	m.mu.Lock()
	old := m.node
	m.mu.Unlock()
	n := len(m.w.spec.Bases)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		d := min(backoffCap, backoffBase<<min(attempt, 10))
		select {
		case <-m.w.ctx.Done():
			return
		case <-time.After(time.Duration(rand.Int64N(int64(d)))):
		}
		node := rand.IntN(n)
		if n > 1 {
			for node == old {
				node = rand.IntN(n)
			}
		}
		if _, dead := m.w.deadNodes.Load(node); dead && n > 2 {
			continue // a balancer would not send it there either
		}
		m.w.attempts.Add(1)
		err := m.open(m.w.ctx, node)
		if err == nil {
			return
		}
		m.w.failedMu.Lock()
		if m.w.failed == nil {
			m.w.failed = make(map[string]int64)
		}
		m.w.failed[failure(err)]++
		m.w.failedMu.Unlock()
	}
	m.mu.Lock()
	m.gaveUp = true
	m.mu.Unlock()
}

// handle looks at one frame received live.
func (m *wmember) handle(f []byte) {
	head := f[:min(len(f), 100)]
	switch {
	case bytes.HasPrefix(f, idPrefix) && bytes.Contains(head, typeMsg):
		room, k, sched, ok := parseText(f)
		if !ok {
			return
		}
		id := f[len(idPrefix):]
		if i := bytes.IndexByte(id, '"'); i >= 0 {
			id = id[:i]
		}
		m.deliver(room, k, string(id), sched)
	case bytes.Contains(head, typeUsers):
		m.w.usersFrames.Add(1)
		problem := m.w.usersExact(f, m.room)
		now := time.Now().UnixNano()
		m.mu.Lock()
		if problem == "" && !m.usersOK {
			m.exactAt = now
		}
		m.usersOK = problem == ""
		if problem != "" {
			m.usersFrame = problem
		}
		m.mu.Unlock()
	case bytes.Contains(head, typeNote):
		if bytes.Contains(f, leftText) {
			m.w.leftNotices.Add(1)
		}
	case bytes.Contains(head, typeErr):
		m.w.errFrames.Add(1)
	}
}

// usersExact reports whether a users frame lists the room exactly: every
// member once, nobody else, and the count right; if not, what is wrong
// with it. Every local member of a room on a node gets the same bytes, so
// answers are cached by frame.
func (w *worker) usersExact(f []byte, room *wroom) (problem string) {
	w.usersMu.Lock()
	problem, hit := w.usersCache[string(f)]
	w.usersMu.Unlock()
	if hit {
		return problem
	}
	var u struct {
		Room  string `json:"room"`
		Count int    `json:"count"`
		Users []struct {
			Name string `json:"name"`
		} `json:"users"`
	}
	size := len(room.members)
	if err := json.Unmarshal(f, &u); err != nil || u.Room != roomName(room.id) {
		problem = fmt.Sprintf("not a users frame of %s: %.120s", roomName(room.id), f)
	} else {
		times := make([]int, size)
		var others, missing, twice []string
		lo := room.id * size
		for _, e := range u.Users {
			id, err := strconv.Atoi(strings.TrimPrefix(e.Name, "m"))
			if err != nil || id < lo || id >= lo+size {
				others = append(others, e.Name)
				continue
			}
			if times[id-lo]++; times[id-lo] == 2 {
				twice = append(twice, e.Name)
			}
		}
		for i, n := range times {
			if n == 0 {
				missing = append(missing, "m"+strconv.Itoa(lo+i))
			}
		}
		if u.Count != size || len(others)+len(missing)+len(twice) > 0 {
			problem = fmt.Sprintf("%s: count %d, missing %v, twice %v, not members %v", u.Room, u.Count, short(missing), short(twice), short(others))
		}
	}
	w.usersMu.Lock()
	if len(w.usersCache) > 8192 {
		clear(w.usersCache)
	}
	w.usersCache[string(f)] = problem
	w.usersMu.Unlock()
	return problem
}

// probe opens one more socket as m, to the node and room of its own, and
// says what the users frame that socket gets at once lists. A joiner's
// frame is built from the presence its node holds at that moment: a right
// one means the node holds the room right and did not send m's socket the
// latest frame; a wrong one, that the node's presence is wrong.
func (m *wmember) probe() string {
	m.mu.Lock()
	node := m.node
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.w.ctx, 5*time.Second)
	defer cancel()
	u := roomWS(m.w.spec.Bases[node], roomName(m.room.id))
	ws, err := dialRoom(ctx, m.w.nc.hc, u, m.cookie)
	if err != nil {
		return "no socket (" + err.Error() + ")"
	}
	defer ws.CloseNow()
	ws.SetReadLimit(4 << 20)
	for {
		_, f, err := ws.Read(ctx)
		if err != nil {
			return "no users frame (" + err.Error() + ")"
		}
		if bytes.Contains(f[:min(len(f), 100)], typeUsers) {
			if problem := m.w.usersExact(f, m.room); problem != "" {
				return problem
			}
			return "the room listed exactly"
		}
	}
}

// short is at most the first 5 of names.
func short(names []string) []string { return names[:min(len(names), 5)] }

// presence waits until every client's latest users frame lists its room
// exactly. LastNS is when the last of them came to see it exactly: the
// frame that made its view exact, not a later one that listed the room as
// the one before had.
func (w *worker) presence(cmd workerCmd) workerReply {
	for {
		var rep workerReply
		var bad *wmember
		for _, m := range w.all {
			m.mu.Lock()
			if m.usersOK {
				rep.Converged++
				rep.LastNS = max(rep.LastNS, m.exactAt)
			} else {
				rep.Pending++
				if rep.Bad == "" {
					bad = m
					rep.Bad = fmt.Sprintf("client %d (up %v, node %d): %s", m.id, m.up, m.node+1, m.usersFrame)
				}
			}
			m.mu.Unlock()
		}
		if rep.Pending > 0 && time.Now().UnixNano() > cmd.DeadlineNS && w.ctx.Err() == nil {
			rep.Bad += "; a socket opened there now as the same client gets: " + bad.probe()
			return rep
		}
		if rep.Pending == 0 || time.Now().UnixNano() > cmd.DeadlineNS || w.ctx.Err() != nil {
			return rep
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recovery waits until every client of the killed node (cmd.Node, killed
// at cmd.AfterNS) is back on another node: socket open, history frame
// received.
func (w *worker) recovery(cmd workerCmd) workerReply {
	w.victimsMu.Lock()
	victims := slices.Clone(w.victims)
	w.victimsMu.Unlock()
	for {
		rep := workerReply{Dropped: len(victims)}
		var back histogram
		for _, m := range victims {
			m.mu.Lock()
			switch {
			case m.up && m.node != cmd.Node && m.backAt >= cmd.AfterNS:
				rep.Back++
				rep.LastBack = max(rep.LastBack, m.backAt)
				back.record(time.Duration(m.backAt - cmd.AfterNS))
			case m.gaveUp:
				rep.GaveUp++
			}
			m.mu.Unlock()
		}
		for _, m := range w.all {
			m.mu.Lock()
			if !m.up {
				rep.StillDown++
			}
			m.mu.Unlock()
		}
		rep.Attempts = w.attempts.Load()
		w.failedMu.Lock()
		rep.FailedBy = maps.Clone(w.failed)
		w.failedMu.Unlock()
		w.lossesMu.Lock()
		rep.Losses = maps.Clone(w.losses)
		w.lossesMu.Unlock()
		if rep.Back+rep.GaveUp == rep.Dropped || time.Now().UnixNano() > cmd.DeadlineNS || w.ctx.Err() != nil {
			rep.BackHist = back.sparse()
			return rep
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chat sends each room's messages at cmd.Rate from StartNS to EndNS (each
// room's schedule offset at random, each message from the room's next
// sender), waits up to DrainNS for every acknowledged message to reach
// every member, and reports what arrived.
func (w *worker) chat(cmd workerCmd) workerReply {
	start, end := time.Unix(0, cmd.StartNS), time.Unix(0, cmd.EndNS)
	for s := range histShards {
		w.histMu[s].Lock()
		w.hists[s].reset()
		w.histMu[s].Unlock()
	}
	w.measureFrom.Store(cmd.StartNS)
	tail := newTailSeries(cmd.StartNS, cmd.EndNS, cmd.LateNS)
	w.tail.Store(tail)
	dups0, errs0, left0, resets0 := w.dups(), w.errFrames.Load(), w.leftNotices.Load(), w.resets.Load()
	users0 := w.usersFrames.Load()
	first := make([]uint32, len(w.rooms))
	for i, r := range w.rooms {
		r.mu.Lock()
		first[i] = r.next
		r.mu.Unlock()
	}
	var sent, skipped, sendErrs atomic.Uint64
	interval := time.Duration(float64(time.Second) / cmd.Rate)
	var wg sync.WaitGroup
	for _, r := range w.rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			offset := time.Duration(rand.Int64N(int64(interval)))
			var buf []byte
			for j := 0; ; j++ {
				sched := start.Add(offset + time.Duration(j)*interval)
				if !sched.Before(end) || w.ctx.Err() != nil {
					return
				}
				if d := time.Until(sched); d > 0 {
					time.Sleep(d)
				}
				r.mu.Lock()
				k := r.next
				r.next++
				r.mu.Unlock()
				s := r.sender(k)
				s.mu.Lock()
				ws, up := s.ws, s.up
				s.mu.Unlock()
				if !up {
					skipped.Add(1)
					continue
				}
				buf = messageFrame(buf, uint32(r.id), k, sched)
				wctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
				err := ws.Write(wctx, websocket.MessageText, buf)
				cancel()
				if err != nil {
					sendErrs.Add(1)
					continue
				}
				r.mu.Lock()
				setBit(&r.sent, k)
				r.mu.Unlock()
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	next := make([]uint32, len(w.rooms))
	for i, r := range w.rooms {
		r.mu.Lock()
		next[i] = r.next
		r.mu.Unlock()
	}
	w.phasesMu.Lock()
	w.phases = append(w.phases, [2][]uint32{first, next})
	w.phasesMu.Unlock()
	var rep workerReply
	deadline := time.Now().Add(time.Duration(cmd.DrainNS))
	for {
		rep = w.account(first, nil)
		if (rep.Lost == 0 && rep.Acked == rep.Sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep.Sent, rep.SkippedDown, rep.SendErrors = sent.Load(), skipped.Load(), sendErrs.Load()
	rep.Dups = w.dups() - dups0
	w.dupMu.Lock()
	rep.DupSamples, w.dupSamples = w.dupSamples, nil
	w.dupMu.Unlock()
	rep.ErrFrames = w.errFrames.Load() - errs0
	rep.LeftNotices = w.leftNotices.Load() - left0
	rep.UsersFrames = w.usersFrames.Load() - users0
	rep.Resets = w.resets.Load() - resets0
	var h histogram
	for s := range histShards {
		w.histMu[s].Lock()
		h.merge(&w.hists[s])
		w.histMu[s].Unlock()
	}
	rep.Hist = h.sparse()
	w.tail.CompareAndSwap(tail, nil)
	tail.report(&rep)
	return rep
}

// account counts, for the messages of each room from first[i] to next[i]
// (to the room's next message if next is nil), those sent, acknowledged,
// and acknowledged but missing at a member.
func (w *worker) account(first, next []uint32) workerReply {
	var rep workerReply
	for i, r := range w.rooms {
		r.mu.Lock()
		last := r.next
		if next != nil {
			last = next[i]
		}
		var acked []uint32
		for k := first[i]; k < last; k++ {
			if hasBit(r.sent, k) {
				rep.Sent++
			}
			if hasBit(r.acked, k) {
				acked = append(acked, k)
			}
		}
		r.mu.Unlock()
		rep.Acked += uint64(len(acked))
		for _, m := range r.members {
			m.mu.Lock()
			for _, k := range acked {
				rep.Expected++
				if hasBit(m.seen, k) {
					rep.Delivered++
				} else {
					rep.Lost++
				}
			}
			m.mu.Unlock()
		}
	}
	return rep
}

func (w *worker) dups() uint64 {
	var n uint64
	for _, m := range w.all {
		m.mu.Lock()
		n += m.dups
		m.mu.Unlock()
	}
	return n
}
