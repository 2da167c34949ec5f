package main_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/nginxtest"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// The tests in this file and in failure_test.go run several real nodes on
// one real redis-server, most of them behind a real nginx running the
// shipped deploy/nginx.conf, and break things while messages flow.

// lbCluster is a redis-server, some nodes on it and nginx in front.
type lbCluster struct {
	redis *redistest.Server
	nodes []*testnode.Node
	lb    *nginxtest.Nginx
}

// startLBCluster starts redis-server (with persistence, so that a restart
// keeps the history), n nodes with the given extra flags and nginx.
func startLBCluster(t testing.TB, n int, args ...string) *lbCluster {
	t.Helper()
	cl := &lbCluster{redis: redistest.StartOpts(t, redistest.Options{AppendOnly: true})}
	var addrs []string
	for i := 0; i < n; i++ {
		node := testnode.Start(t, testnode.Options{Layer: cl.layer(), Args: args})
		cl.nodes = append(cl.nodes, node)
		addrs = append(addrs, node.Addr())
	}
	cl.lb = nginxtest.Start(t, addrs...)
	return cl
}

func (cl *lbCluster) layer() string { return "redis://" + cl.redis.Addr() + "/0" }

// historyEntries returns what Redis holds in room's history stream.
func (cl *lbCluster) historyEntries(room string) ([]redis.XMessage, error) {
	rc := redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return rc.XRange(ctx, "chatterpro:{"+room+"}:h", "-", "+").Result()
}

// history returns the IDs Redis holds in room's history stream.
func (cl *lbCluster) history(t testing.TB, room string) []string {
	t.Helper()
	xs, err := cl.historyEntries(room)
	if err != nil {
		t.Fatalf("XRANGE of %q's history: %v", room, err)
	}
	ids := make([]string, len(xs))
	for i, x := range xs {
		ids[i] = x.ID
	}
	return ids
}

// lbConnections returns a node's chatterpro_connections gauge (-1 if the
// node does not answer).
func lbConnections(n *testnode.Node) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := n.Get(ctx, "/metrics")
	if err != nil || r.StatusCode != http.StatusOK {
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(r.Body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "chatterpro_connections "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return int(f)
		}
	}
	return -1
}

// lbCounter is a counting chat client: it sends numbered messages, keeps
// every message ID it receives in arrival order, knows which of its own
// messages were acknowledged (its own copy came back with an ID), and
// reconnects with since=<last id> whenever its connection ends. Run owns it;
// the other methods may be called from any goroutine.
type lbCounter struct {
	name string
	room string
	base string // where to reconnect: nginx, or a node
	c    *testnode.Client

	sending atomic.Bool
	sendMu  sync.Mutex // held while a message is being sent

	mu          sync.Mutex
	ids         []string          // every message ID received, in arrival order
	got         map[string]int    // ID → times received
	acked       map[string]string // own text → ID
	sent        int               // messages written to the socket
	unavailable int               // error frames with code unavailable
	otherErrors []string          // other error frames
	drained     int               // answers to lbDrain's markers
	resets      int               // history frames with reset set
	lastID      string            // the newest ID received
	down        bool              // the connection has ended, not yet back
	downSince   time.Time         // when it ended
	outages     []time.Duration   // how long each lost connection took to come back
	closes      []websocket.StatusCode
	frames      map[string]int // frames received by type
	arrivals    []lbArrival
	latency     []time.Duration // of messages whose text carries " t=<unix nanos>"
	stamp       bool            // add " t=<unix nanos>" to sent texts
}

// lbArrival is one received message.
type lbArrival struct {
	id, user string
	at       time.Time
}

// newLBCounter joins room on base; it does not connect yet.
func newLBCounter(ctx context.Context, t testing.TB, base, name, room string) *lbCounter {
	t.Helper()
	c, err := testnode.Join(ctx, base, name, room)
	if err != nil {
		t.Fatalf("%s joining %q via %s: %v", name, room, base, err)
	}
	t.Cleanup(func() { c.Close(websocket.StatusNormalClosure) })
	return &lbCounter{
		name: name, room: room, base: base, c: c,
		got: make(map[string]int), acked: make(map[string]string), frames: make(map[string]int),
	}
}

// dial connects the first time.
func (k *lbCounter) dial(ctx context.Context, t testing.TB) {
	t.Helper()
	if err := k.c.DialTo(ctx, k.base, ""); err != nil {
		t.Fatalf("%s: dialing %s: %v", k.name, k.base, err)
	}
}

// run reads frames, sends a message every sendEvery while sending is set,
// and reconnects when the connection ends, until ctx ends.
func (k *lbCounter) run(ctx context.Context, sendEvery time.Duration) {
	seq := 0
	next := time.Now().Add(rand.N(sendEvery)) // spread the senders out
	for ctx.Err() == nil {
		k.mu.Lock()
		down := k.down
		k.mu.Unlock()
		if down {
			k.reconnect(ctx)
			continue
		}
		if !time.Now().Before(next) {
			next = time.Now().Add(sendEvery)
			k.sendMu.Lock()
			if k.sending.Load() {
				seq++
				text := fmt.Sprintf("%s-%d", k.name, seq)
				if k.stamp {
					text += " t=" + strconv.FormatInt(time.Now().UnixNano(), 10)
				}
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := k.c.Send(wctx, text)
				cancel()
				if err == nil {
					k.mu.Lock()
					k.sent++
					k.mu.Unlock()
				}
			}
			k.sendMu.Unlock()
		}
		wctx, cancel := context.WithDeadline(ctx, next)
		f, err := k.c.Next(wctx)
		cancel()
		if err != nil {
			select {
			case <-k.c.Done():
				k.lost(err)
			default: // only the wait ended
			}
			continue
		}
		k.handle(f)
	}
}

func (k *lbCounter) lost(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.down = true
	k.downSince = time.Now()
	k.closes = append(k.closes, websocket.CloseStatus(err))
}

func (k *lbCounter) reconnect(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		k.mu.Lock()
		since := k.lastID
		k.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := k.c.DialTo(dctx, k.base, since)
		cancel()
		if err == nil {
			k.mu.Lock()
			k.down = false
			k.outages = append(k.outages, time.Since(k.downSince))
			k.mu.Unlock()
			return
		}
		// Back off like the browser client does (capped, with jitter):
		// a thousand clients retrying in lockstep are a load test of
		// their own.
		wait := min(100*time.Millisecond<<min(attempt, 4), time.Second)
		attempt++
		select {
		case <-ctx.Done():
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
	}
}

func (k *lbCounter) handle(f testnode.Frame) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.frames[f.Type]++
	switch f.Type {
	case "history":
		if f.Reset {
			k.resets++
		}
		for _, m := range f.Messages {
			k.record(m)
		}
	case "message":
		k.record(f)
	case "error":
		switch f.Code {
		case "unavailable":
			k.unavailable++
		case "unknown_type":
			k.drained++
		default:
			k.otherErrors = append(k.otherErrors, f.Code)
		}
	}
}

func (k *lbCounter) record(m testnode.Frame) {
	if m.ID == "" {
		return
	}
	k.ids = append(k.ids, m.ID)
	k.arrivals = append(k.arrivals, lbArrival{m.ID, m.User, time.Now()})
	k.got[m.ID]++
	if k.lastID == "" || channellayer.CompareID(m.ID, k.lastID) > 0 {
		k.lastID = m.ID
	}
	if m.User == k.name && strings.HasPrefix(m.Text, k.name+"-") {
		k.acked[m.Text] = m.ID
	}
	if _, at, ok := strings.Cut(m.Text, " t="); ok && k.got[m.ID] == 1 {
		if ns, err := strconv.ParseInt(at, 10, 64); err == nil {
			k.latency = append(k.latency, time.Since(time.Unix(0, ns)))
		}
	}
}

// ackedIDs returns the IDs of k's acknowledged messages.
func (k *lbCounter) ackedIDs() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.acked))
	for _, id := range k.acked {
		out = append(out, id)
	}
	return out
}

// missing returns how many of ids k has not received.
func (k *lbCounter) missing(ids []string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, id := range ids {
		if k.got[id] == 0 {
			n++
		}
	}
	return n
}

func (k *lbCounter) isDown() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.down
}

// check reports duplicates and order violations in what k received.
func (k *lbCounter) check(t testing.TB) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	dups := 0
	for _, n := range k.got {
		if n > 1 {
			dups += n - 1
		}
	}
	if dups > 0 {
		t.Errorf("%s received %d duplicated messages", k.name, dups)
	}
	for i := 1; i < len(k.ids); i++ {
		if channellayer.CompareID(k.ids[i-1], k.ids[i]) >= 0 {
			t.Errorf("%s received %s after %s: out of order", k.name, k.ids[i], k.ids[i-1])
			break
		}
	}
	if k.resets > 0 {
		t.Errorf("%s got %d history frames with reset: a resume was refused", k.name, k.resets)
	}
	if len(k.otherErrors) > 0 {
		t.Errorf("%s got error frames %v", k.name, k.otherErrors)
	}
}

// lbRun runs counters until stop is called; stop waits for them.
func lbRun(counters []*lbCounter, sendEvery time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, k := range counters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.run(ctx, sendEvery)
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
}

// lbSetSending starts or stops the counters' sending; stopping waits for
// sends in progress.
func lbSetSending(counters []*lbCounter, on bool) {
	for _, k := range counters {
		k.sending.Store(on)
	}
	if !on {
		for _, k := range counters {
			k.sendMu.Lock()
			k.sendMu.Unlock() //nolint:staticcheck // waits for a send in progress
		}
	}
}

// lbDrain makes sure that every message a connected counter has sent was
// handled by its node (recorded, or refused with an error frame): a node
// handles one connection's frames in order, so when the answer to a frame
// of an unknown type arrives, every message before it was handled. A
// message still in flight when sending stopped would otherwise be recorded
// after the test stopped looking. Counters whose connection is down are
// skipped: what they had in flight died with it, and what of it was
// recorded anyway is in the history the tests check.
func lbDrain(ctx context.Context, counters []*lbCounter, d time.Duration) error {
	before := make([]int, len(counters))
	for i, k := range counters {
		k.mu.Lock()
		before[i] = k.drained
		k.mu.Unlock()
		if k.isDown() {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = k.c.SendRaw(wctx, []byte(`{"type":"drain"}`))
		cancel()
	}
	var behind []string
	err := testkit.Poll(d, func() error {
		behind = behind[:0]
		for i, k := range counters {
			k.mu.Lock()
			if !k.down && k.drained == before[i] {
				behind = append(behind, k.name)
			}
			k.mu.Unlock()
		}
		if len(behind) > 0 {
			return errors.New("behind")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("after %v no answer to the drain marker from %s", d, strings.Join(behind, ", "))
	}
	return nil
}

// lbAllAcked returns the acknowledged IDs of all counters.
func lbAllAcked(counters []*lbCounter) []string {
	var all []string
	for _, k := range counters {
		all = append(all, k.ackedIDs()...)
	}
	return all
}

// lbSettle waits (up to d) until every counter is connected and has every
// acknowledged message and every ID in extra.
func lbSettle(counters []*lbCounter, d time.Duration, extra func() []string) error {
	var behind []string
	err := testkit.Poll(d, func() error {
		want := lbAllAcked(counters)
		if extra != nil {
			want = append(want, extra()...)
		}
		behind = behind[:0]
		for _, k := range counters {
			if n := k.missing(want); n > 0 || k.isDown() {
				behind = append(behind, fmt.Sprintf("%s (missing %d, down %v)", k.name, n, k.isDown()))
			}
		}
		if len(behind) > 0 {
			return errors.New("behind")
		}
		return nil
	})
	if err != nil {
		if len(behind) > 10 {
			behind = append(behind[:10], fmt.Sprintf("and %d more", len(behind)-10))
		}
		return fmt.Errorf("after %v still behind: %s", d, strings.Join(behind, ", "))
	}
	return nil
}

// lbAwaitAcked waits (up to d) until every counter is connected and has n
// more of its own messages acknowledged than when it was called: traffic
// flows from everyone.
func lbAwaitAcked(t *testing.T, counters []*lbCounter, n int, d time.Duration, what string) {
	t.Helper()
	base := make([]int, len(counters))
	for i, k := range counters {
		base[i] = len(k.ackedIDs())
	}
	testkit.EventuallyNil(t, d, func() error {
		var behind []string
		for i, k := range counters {
			if got := len(k.ackedIDs()) - base[i]; got < n || k.isDown() {
				behind = append(behind, fmt.Sprintf("%s (%d acknowledged, down %v)", k.name, got, k.isDown()))
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("want %d more acknowledged each; behind: %s", n, strings.Join(behind, ", "))
		}
		return nil
	}, what)
}

func TestLBKillNodeNothingLost(t *testing.T) {
	cl := startLBCluster(t, 2, "--rate", "0", "--log-level", "debug")
	ctx := timeout(t, 90*time.Second)
	const room = "Failover Room"

	// Join every session first, then open every socket, so that nginx's
	// round robin spreads the sockets over both nodes.
	var counters []*lbCounter
	for i := 0; i < 6; i++ {
		counters = append(counters, newLBCounter(ctx, t, cl.lb.URL(), fmt.Sprintf("u%d", i), room))
	}
	for _, k := range counters {
		k.dial(ctx, t)
	}
	victim, survivor := cl.nodes[1], cl.nodes[0]
	var onVictim, onSurvivor int
	testkit.Poll(5*time.Second, func() error {
		if onVictim, onSurvivor = lbConnections(victim), lbConnections(survivor); onVictim+onSurvivor != len(counters) {
			return errors.New("not all counted")
		}
		return nil
	})
	if onVictim < 1 || onSurvivor < 1 || onVictim+onSurvivor != len(counters) {
		t.Fatalf("nginx spread the %d sockets as %d and %d; want both nodes used", len(counters), onSurvivor, onVictim)
	}

	// 6 clients each sending every 300 ms: 20 messages a second.
	stop := lbRun(counters, 300*time.Millisecond)
	defer stop()
	lbSetSending(counters, true)
	lbAwaitAcked(t, counters, 7, 15*time.Second, "traffic from everyone before the kill") // about 2 s of it
	killed := time.Now()
	victim.Kill()
	lbAwaitAcked(t, counters, 17, 25*time.Second, "traffic from everyone again after the kill") // about 5 s of it
	lbSetSending(counters, false)
	if err := lbDrain(ctx, counters, 5*time.Second); err != nil {
		t.Error(err)
	}
	if err := lbSettle(counters, 10*time.Second, func() []string { return cl.history(t, room) }); err != nil {
		t.Error(err)
	}
	stop()

	recorded := cl.history(t, room)
	acked := lbAllAcked(counters)
	victims := 0
	sent := 0
	for _, k := range counters {
		k.check(t)
		k.mu.Lock()
		sent += k.sent
		if len(k.outages) > 0 {
			victims++
			back := k.downSince.Add(k.outages[0]).Sub(killed)
			if len(k.outages) != 1 || back > 5*time.Second {
				t.Errorf("%s: outages %v (back %v after the kill); want one, back within 5 s", k.name, k.outages, back)
			}
			t.Logf("%s lost its node (close %v) and was back %v after the kill", k.name, k.closes, back)
		}
		k.mu.Unlock()
		if n := k.missing(acked); n > 0 {
			t.Errorf("%s misses %d of %d acknowledged messages", k.name, n, len(acked))
		}
		if n := k.missing(recorded); n > 0 {
			t.Errorf("%s misses %d of the %d messages Redis holds in the history", k.name, n, len(recorded))
		}
	}
	if t.Failed() {
		cl.explainMissing(t, room, counters)
	}
	if victims != onVictim {
		t.Errorf("%d clients reconnected; %d were on the killed node", victims, onVictim)
	}
	if len(acked) < 100 {
		t.Errorf("only %d messages acknowledged of %d sent; want a real flow", len(acked), sent)
	}
	t.Logf("%d sent, %d acknowledged, %d in history; %d clients moved from the killed node", sent, len(acked), len(recorded), victims)
}

// lbReader is a light chat reader for big rooms: it counts message frames
// by ID and measures their latency from the send time the text carries
// ("t=<unix nanos> ..."), without decoding every frame.
type lbReader struct {
	name string
	conn *websocket.Conn

	mu     sync.Mutex
	ids    map[string]int
	lat    []time.Duration
	errors int
	end    error // why reading ended
	done   chan struct{}
}

// lbDial joins room on base as name and opens a socket; the test ends it.
// With rcvBuf > 0 the socket's receive buffer is set that small, so that a
// client that does not read cannot hide megabytes in the kernel.
func lbDial(ctx context.Context, t testing.TB, base, name, room string, rcvBuf int) *lbReader {
	t.Helper()
	r, err := lbDialErr(ctx, base, name, room, rcvBuf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func lbDialErr(ctx context.Context, base, name, room string, rcvBuf int) (*lbReader, error) {
	c, err := testnode.Join(ctx, base, name, room)
	if err != nil {
		return nil, fmt.Errorf("%s joining: %w", name, err)
	}
	d := &net.Dialer{}
	if rcvBuf > 0 {
		d.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	h := http.Header{}
	h.Add("Cookie", (&http.Cookie{Name: c.Cookie.Name, Value: c.Cookie.Value}).String())
	conn, _, err := websocket.Dial(ctx, testnode.WebsocketURL(base, room, ""), &websocket.DialOptions{
		HTTPHeader: h,
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}},
	})
	if err != nil {
		return nil, fmt.Errorf("%s dialing: %w", name, err)
	}
	conn.SetReadLimit(1 << 20)
	return &lbReader{name: name, conn: conn, ids: make(map[string]int), done: make(chan struct{})}, nil
}

// stop closes the connection and waits for the reading goroutine.
func (r *lbReader) stop() {
	r.conn.CloseNow()
	if r.started() {
		<-r.done
	}
}

func (r *lbReader) started() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids != nil && r.lat != nil
}

// read reads until the connection ends.
func (r *lbReader) read() {
	r.mu.Lock()
	r.lat = make([]time.Duration, 0, 1024)
	r.mu.Unlock()
	go func() {
		defer close(r.done)
		for {
			_, data, err := r.conn.Read(context.Background())
			now := time.Now()
			if err != nil {
				r.mu.Lock()
				r.end = err
				r.mu.Unlock()
				return
			}
			switch {
			case bytes.HasPrefix(data, []byte(`{"id":"`)):
				id := data[len(`{"id":"`):]
				id = id[:bytes.IndexByte(id, '"')]
				var lat time.Duration = -1
				if i := bytes.Index(data, []byte(`"text":"t=`)); i >= 0 {
					rest := data[i+len(`"text":"t=`):]
					if j := bytes.IndexByte(rest, ' '); j > 0 {
						if ns, err := strconv.ParseInt(string(rest[:j]), 10, 64); err == nil {
							lat = now.Sub(time.Unix(0, ns))
						}
					}
				}
				r.mu.Lock()
				r.ids[string(id)]++
				if lat >= 0 {
					r.lat = append(r.lat, lat)
				}
				r.mu.Unlock()
			case bytes.HasPrefix(data, []byte(`{"type":"error"`)):
				r.mu.Lock()
				r.errors++
				r.mu.Unlock()
			}
		}
	}()
}

func (r *lbReader) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// lbPayload is a message text of about 1900 characters carrying its send time.
func lbPayload(pad string) string {
	return "t=" + strconv.FormatInt(time.Now().UnixNano(), 10) + " " + pad
}

// lbSlowNeeds returns how many 7.5 KB messages overflow a non-reading
// client's 1 MiB queue for sure: what the server's kernel send buffer can
// hold at most (tcp_wmem's maximum), a batch in the writer's hands (at
// most the queue's size) and the queue itself.
func lbSlowNeeds() int {
	wmem := 4 << 20
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if v, err := strconv.Atoi(f[2]); err == nil {
				wmem = v
			}
		}
	}
	const frame, queue = 7600, 1 << 20
	return (wmem+2*queue+256<<10)/frame + 1
}

// lbPadding returns n emoji: n characters (the text limit counts
// characters), four bytes each, so that big frames need few messages.
func lbPadding(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteRune(rune(0x1F600 + i%80))
	}
	return b.String()
}

// lbFlood has senders send up to perSender messages each, at rate messages
// a second each, until stop is closed; it returns how many were written.
func lbFlood(ctx context.Context, senders []*lbReader, perSender int, rate float64, stop <-chan struct{}) int {
	pad := lbPadding(1870)
	var wg sync.WaitGroup
	var written atomic.Int64
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			for i := 0; i < perSender; i++ {
				select {
				case <-ctx.Done():
					return
				case <-stop:
					return
				case <-tick.C:
				}
				b := []byte(`{"type":"message","text":"` + lbPayload(pad) + `"}`)
				if s.conn.Write(ctx, websocket.MessageText, b) == nil {
					written.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(written.Load())
}

// lbSlowRoom is a node with readers in one room and, if slow, one more
// client that does not read.
type lbSlowRoom struct {
	node    *testnode.Node
	readers []*lbReader
	slow    *lbReader
}

func startLBSlowRoom(ctx context.Context, t testing.TB, readers int, slow bool) *lbSlowRoom {
	t.Helper()
	rs := redistest.Start(t)
	s := &lbSlowRoom{node: testnode.Start(t, testnode.Options{Layer: "redis://" + rs.Addr() + "/0", Args: []string{"--rate", "0"}})}
	const room = "Big Room"
	s.readers = make([]*lbReader, readers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := range s.readers {
		wg.Add(1)
		go func() { // joins in parallel: a big room fills quickly
			defer wg.Done()
			r, err := lbDialErr(ctx, s.node.URL(), fmt.Sprintf("reader %d", i), room, 0)
			if err != nil {
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
				return
			}
			r.read()
			s.readers[i] = r
		}()
	}
	wg.Wait()
	for _, r := range s.readers {
		if r != nil {
			t.Cleanup(r.stop)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("joining the big room: %s", strings.Join(failed, "; "))
	}
	if slow {
		s.slow = lbDial(ctx, t, s.node.URL(), "sleeper", room, 4096)
	}
	return s
}

// flood has 4 readers send perSender messages of 1900 characters (7.5 KB)
// each, at rate a second each, and returns how many were written. With a
// sleeper, the flood goes on only until the node reports that it closed a
// connection with 1013: what it takes to fill the sleeper's kernel buffers
// and 1 MiB queue depends on the machine (readAt estimates it). The sleeper
// then starts reading, to see the close frame behind what was buffered (a
// write stuck much longer would time out and end the connection without
// one).
func (s *lbSlowRoom) flood(ctx context.Context, perSender int, rate float64, readAt int) int {
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() { done <- lbFlood(ctx, s.readers[:4], perSender, rate, stop) }()
	if s.slow == nil {
		return <-done
	}
	defer s.slow.read()
	for {
		select {
		case n := <-done:
			return n
		case <-time.After(50 * time.Millisecond):
		}
		if s.closedSlow(ctx) {
			close(stop)
			return <-done
		}
	}
}

// closedSlow reports whether the node has closed a connection with 1013.
func (s *lbSlowRoom) closedSlow(ctx context.Context) bool {
	r, err := s.node.Get(ctx, "/metrics")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(r.Body, "\n") {
		if strings.HasPrefix(line, `chatterpro_closes_total{code="1013"}`) {
			return true
		}
	}
	return false
}

// waitAll waits up to d until every reader has want messages.
func (s *lbSlowRoom) waitAll(d time.Duration, want int) error {
	var behind []string
	err := testkit.Poll(d, func() error {
		behind = behind[:0]
		for _, r := range s.readers {
			if n := r.count(); n < want {
				behind = append(behind, fmt.Sprintf("%s has %d", r.name, n))
			}
		}
		if len(behind) > 0 {
			return errors.New("behind")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("after %v, of %d messages: %s", d, want, strings.Join(behind, ", "))
	}
	return nil
}

// latencies returns every reader's latencies, sorted.
func (s *lbSlowRoom) latencies() []time.Duration {
	var all []time.Duration
	for _, r := range s.readers {
		r.mu.Lock()
		all = append(all, r.lat...)
		r.mu.Unlock()
	}
	slices.Sort(all)
	return all
}

func lbPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func TestLBSlowConsumerClosed1013(t *testing.T) {
	ctx := timeout(t, 90*time.Second)
	start := time.Now()
	room := startLBSlowRoom(ctx, t, 49, true)
	t.Logf("50 members joined in %v", time.Since(start))
	// 4 of the readers send messages of 1900 characters (7.5 KB) until the
	// node reports the 1013: what holds frames for the sleeper is the
	// server's socket send buffer (it grows up to tcp_wmem's maximum) and
	// the 1 MiB queue.
	readAt := lbSlowNeeds()
	start = time.Now()
	// 48 messages a second in all: what 49 readers keep up with even under
	// the race detector, on both sides, on 2 cores.
	written := room.flood(ctx, 3*readAt/4, 12, readAt)
	t.Logf("%d messages written in %v before the node closed the sleeper (estimate: %d)", written, time.Since(start), readAt)
	select {
	case <-room.slow.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the non-reading client was not closed; it read %d messages", room.slow.count())
	}
	room.slow.mu.Lock()
	end, got := room.slow.end, len(room.slow.ids)
	room.slow.mu.Unlock()
	if code := websocket.CloseStatus(end); code != websocket.StatusTryAgainLater {
		t.Errorf("the non-reading client ended with %v (%v) after %d messages; want close 1013", code, end, got)
	}
	if err := room.waitAll(20*time.Second, written); err != nil {
		t.Error(err)
	}
	for _, r := range room.readers {
		r.mu.Lock()
		for id, n := range r.ids {
			if n > 1 {
				t.Errorf("%s got %s %d times", r.name, id, n)
			}
		}
		if r.errors > 0 || r.end != nil {
			t.Errorf("%s: %d error frames, connection end %v", r.name, r.errors, r.end)
		}
		r.mu.Unlock()
	}
	lat := room.latencies()
	t.Logf("%d messages to 49 readers; the sleeper got %d before 1013; readers' latency p50 %v p99 %v",
		written, got, lbPercentile(lat, .5), lbPercentile(lat, .99))
}

// BenchmarkSlowConsumer compares the latency of 49 readers in one room
// with and without a 50th member that never reads (and is closed with
// 1013). Run: go test -run '^$' -bench SlowConsumer ./cmd/chatterpro
func BenchmarkSlowConsumer(b *testing.B) {
	for _, slow := range []bool{false, true} {
		name := "without-slow"
		if slow {
			name = "with-slow"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var lat []time.Duration
			var delivered int
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				room := startLBSlowRoom(ctx, b, 49, slow)
				b.StartTimer()
				readAt := lbSlowNeeds()
				written := room.flood(ctx, (readAt+40)/4, 20, readAt)
				if err := room.waitAll(30*time.Second, written); err != nil {
					b.Fatal(err)
				}
				if slow {
					<-room.slow.done
					if code := websocket.CloseStatus(room.slow.end); code != websocket.StatusTryAgainLater {
						b.Errorf("the sleeper ended with %v; want 1013", room.slow.end)
					}
				}
				lat = append(lat, room.latencies()...)
				delivered += written * len(room.readers)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lbPercentile(lat, .5).Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lbPercentile(lat, .99).Microseconds())/1000, "p99_ms")
			b.ReportMetric(float64(lbPercentile(lat, 1).Microseconds())/1000, "max_ms")
			b.ReportMetric(float64(delivered)/float64(b.N), "deliveries/op")
		})
	}
}

// explainMissing logs, for every message of room's history that some
// counter lacks, who sent it, what it said and who has it, with the nodes'
// layer logs: what a failure report needs to find the cause.
func (cl *lbCluster) explainMissing(t testing.TB, room string, counters []*lbCounter) {
	t.Helper()
	xs, err := cl.historyEntries(room)
	if err != nil {
		t.Logf("XRANGE of %q's history: %v", room, err)
		return
	}
	found := false
	for _, x := range xs {
		var have, lack []string
		for _, k := range counters {
			k.mu.Lock()
			if k.got[x.ID] > 0 {
				have = append(have, k.name)
			} else {
				lack = append(lack, k.name)
			}
			k.mu.Unlock()
		}
		if len(lack) > 0 {
			found = true
			t.Logf("history entry %s %v: received by %v, missing at %v", x.ID, x.Values["d"], have, lack)
		}
	}
	if !found {
		return
	}
	for _, k := range counters {
		k.mu.Lock()
		t.Logf("%s: sent %d, acked %d, unavailable %d, other errors %v, closes %v, last id %s",
			k.name, k.sent, len(k.acked), k.unavailable, k.otherErrors, k.closes, k.lastID)
		k.mu.Unlock()
	}
	for i, n := range cl.nodes {
		var lines []string
		for _, l := range strings.Split(n.Log(), "\n") {
			if strings.Contains(l, "channellayer") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				lines = append(lines, l)
			}
		}
		t.Logf("node %d layer log:\n%s", i, strings.Join(lines, "\n"))
	}
}
