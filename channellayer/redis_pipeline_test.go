package channellayer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// roundTrips counts what a client sends to Redis of some commands (by
// default publishes and scripts): sent alone, and pipelines with the
// commands in them.
type roundTrips struct {
	names                   []string // nil: publish, evalsha, eval
	alone, pipelines, piped atomic.Int64
}

func (h *roundTrips) counts(cmd redis.Cmder) bool {
	names := h.names
	if names == nil {
		names = []string{"publish", "evalsha", "eval"}
	}
	return slices.Contains(names, cmd.Name())
}

func (h *roundTrips) reset() {
	h.alone.Store(0)
	h.pipelines.Store(0)
	h.piped.Store(0)
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.counts(cmd) {
			h.alone.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var n int64
		for _, cmd := range cmds {
			if h.counts(cmd) {
				n++
			}
		}
		if n > 0 {
			h.pipelines.Add(1)
			h.piped.Add(n)
		}
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*roundTrips)(nil)

// pause stops Redis from answering anyone for d (CLIENT PAUSE), so that
// the layer's callers pile up behind one round trip.
func pause(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	c := newClient(t, addr)
	if err := c.Do(tctx(t, time.Second), "client", "pause", d.Milliseconds(), "all").Err(); err != nil {
		t.Fatal(err)
	}
}

// countedLayer opens a layer on a fresh Redis whose round trips trips
// counts, with a channel in group g; one recorded send has loaded the
// script and is not counted.
func countedLayer(t *testing.T, g string) (*redistest.Server, *channellayer.Redis, string, *roundTrips) {
	t.Helper()
	return countedLayerOpts(t, g, channellayer.RedisOptions{Capacity: 1000})
}

// countedLayerOpts is countedLayer with the layer's options.
func countedLayerOpts(t *testing.T, g string, opts channellayer.RedisOptions) (*redistest.Server, *channellayer.Redis, string, *roundTrips) {
	t.Helper()
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	trips := &roundTrips{}
	client.AddHook(trips)
	l := openRedisLayer(t, client, newPrefix(), opts, 5*time.Second)
	ch := newChan(t, l, g)
	if _, err := l.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "warm", nil)); err != nil {
		t.Fatal(err)
	}
	recv(t, l, ch)
	trips.reset()
	return srv, l, ch, trips
}

// Concurrent senders share round trips: while one is under way the others
// wait and go together in one pipeline. Each still gets its own result,
// every message arrives once, and each sender's messages in order.
func TestRedisPipelinesConcurrentSends(t *testing.T) {
	const g, senders, each = "busy", 50, 4
	srv, l, ch, trips := countedLayer(t, g)

	pause(t, srv.Addr(), 300*time.Millisecond)
	type body struct{ Sender, Seq int }
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	ids := make(chan string, senders*each)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m, err := channellayer.NewMessage("chat", body{s, i})
				if err != nil {
					errs <- err
					return
				}
				if s%2 == 0 { // half recorded (a script), half plain publishes
					m, err = l.GroupSendRecorded(tctx(t, 5*time.Second), g, m)
					ids <- m.ID
				} else {
					err = l.GroupSend(tctx(t, 5*time.Second), g, m)
				}
				if err != nil {
					errs <- fmt.Errorf("sender %d, message %d: %w", s, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Error(err)
	}
	seenID := map[string]bool{}
	for id := range ids {
		if id == "" || seenID[id] {
			t.Errorf("recorded send got ID %q (empty or twice)", id)
		}
		seenID[id] = true
	}

	next := make([]int, senders)
	for range senders * each {
		var b body
		if err := json.Unmarshal(recv(t, l, ch).Body, &b); err != nil {
			t.Fatal(err)
		}
		if b.Seq != next[b.Sender] {
			t.Fatalf("sender %d: got message %d, want %d (lost, repeated or out of order)", b.Sender, b.Seq, next[b.Sender])
		}
		next[b.Sender]++
	}
	silent(t, l, ch)

	alone, pipes, piped := trips.alone.Load(), trips.pipelines.Load(), trips.piped.Load()
	t.Logf("%d sends: %d round trips alone, %d pipelines carrying %d", senders*each, alone, pipes, piped)
	if alone+piped != senders*each {
		t.Errorf("%d commands reached Redis for %d sends", alone+piped, senders*each)
	}
	if alone+pipes > senders*each/4 {
		t.Errorf("%d round trips for %d concurrent sends; want at most %d (they should share pipelines)", alone+pipes, senders*each, senders*each/4)
	}
}

// A caller that gives up while its send waits for a batch takes it back:
// it gets its context's error and the message is never published.
func TestRedisPipelineCallerGivesUp(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	trips := &roundTrips{}
	client.AddHook(trips)
	l := openRedisLayer(t, client, newPrefix(), channellayer.RedisOptions{}, 5*time.Second)
	const g = "room"
	ch := newChan(t, l, g)
	pause(t, srv.Addr(), 500*time.Millisecond)

	first := make(chan error, 1)
	go func() { first <- l.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "first", nil)) }()
	testkit.Eventually(t, 5*time.Second, func() bool { return trips.alone.Load()+trips.pipelines.Load() > 0 },
		"first under way, held by the pause")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.GroupSend(ctx, g, mustMsg(t, "second", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a send whose context ended while it waited: %v, want context.DeadlineExceeded", err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if m := recv(t, l, ch); m.Type != "first" {
		t.Fatalf("got %q, want first", m.Type)
	}
	silent(t, l, ch) // second was taken back
}

// After Close, a send fails with ErrClosed, not as Redis being away.
func TestRedisPipelineClosed(t *testing.T) {
	srv := redistest.Start(t)
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	if err := l.Close(tctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := l.GroupSend(tctx(t, time.Second), "g", mustMsg(t, "late", nil)); !errors.Is(err, channellayer.ErrClosed) {
		t.Fatalf("GroupSend after Close: %v, want ErrClosed", err)
	}
}

// panicHook makes a publish of a message of type "boom" panic after a
// moment, as a faulty hook of the application's client might. It tells
// entered when the boom reaches it.
type panicHook struct{ entered chan struct{} }

func (panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, "boom") {
				h.entered <- struct{}{}
				// The hook's slow work: the send after the boom queues
				// behind it meanwhile.
				time.Sleep(200 * time.Millisecond)
				panic("hook failed")
			}
		}
		return next(ctx, cmd)
	}
}

func (panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A publish that panics (and is recovered by its caller) does not hold up
// the publishes that queued behind it.
func TestRedisPipelineSurvivesPanic(t *testing.T) {
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	hook := panicHook{entered: make(chan struct{}, 1)}
	client.AddHook(hook)
	l := openRedisLayer(t, client, newPrefix(), channellayer.RedisOptions{}, 5*time.Second)
	const g = "room"
	ch := newChan(t, l, g)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = l.GroupSend(context.Background(), g, mustMsg(t, "boom", nil))
	}()
	testkit.Receive(t, hook.entered, 5*time.Second, "the boom under way")
	if err := l.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "after", nil)); err != nil {
		t.Fatalf("the send queued behind a panicking one: %v", err)
	}
	if p := <-panicked; p == nil {
		t.Fatal("the boom send did not panic: the test proves nothing")
	}
	if m := recv(t, l, ch); m.Type != "after" {
		t.Fatalf("got %q, want after", m.Type)
	}
}

// recordAsync records n messages with GroupSendRecordedAsync, gap apart,
// and returns their results in the order done was called, and how many of
// them came late: more than late after the call before began, counting to
// the end of their own call. A loaded machine stretches the gaps, and a
// message that comes late may rightly start a round trip of its own.
func recordAsync(t *testing.T, l *channellayer.Redis, g string, n int, gap, late time.Duration) (errs []error, lateOnes int) {
	t.Helper()
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	var prev time.Time
	for i := range n {
		wg.Add(1)
		start := time.Now()
		l.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]int{"n": i}), func(_ channellayer.Message, err error) {
			mu.Lock()
			order = append(order, i)
			errs = append(errs, err)
			mu.Unlock()
			wg.Done()
		})
		if i > 0 && time.Since(prev) > late {
			lateOnes++
		}
		prev = start
		time.Sleep(gap) // the pace of the stream is what is tested
	}
	wg.Wait()
	for k, i := range order {
		if i != k {
			t.Fatalf("done called in the order %v, want call order", order)
		}
	}
	return errs, lateOnes
}

// While a node keeps recording, a message sent without waiting lingers
// for the next ones: a stream of messages a millisecond apart (far slower
// than a round trip on loopback) goes in a few pipelines, not one round
// trip each, and arrives whole and in order.
//
// The linger is long beside the pace, so that a machine slowed by load,
// which stretches the gaps, still sees the stream share round trips. The
// layer lingers only while a round trip began less than pipeBusy (20 ms)
// ago: a message that came later than that after the one before may start
// a round trip of its own, and the one after it another, so each such
// late message raises the bound by two.
func TestRedisRecordAsyncLingers(t *testing.T) {
	const g, n = "stream", 60
	const late = 20 * time.Millisecond // pipeBusy
	// With a linger (off by default); the warm-up makes the pipeline busy.
	_, l, ch, trips := countedLayerOpts(t, g, channellayer.RedisOptions{Capacity: 1000, RecordLinger: 50 * time.Millisecond})

	errs, lateOnes := recordAsync(t, l, g, n, time.Millisecond, late)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	for i := range n {
		var b struct{ N int }
		if err := json.Unmarshal(recv(t, l, ch).Body, &b); err != nil {
			t.Fatal(err)
		}
		if b.N != i {
			t.Fatalf("got message %d, want %d (lost, repeated or out of order)", b.N, i)
		}
	}
	silent(t, l, ch)
	alone, pipes, piped := trips.alone.Load(), trips.pipelines.Load(), trips.piped.Load()
	bound := int64(n/3 + 2*lateOnes)
	t.Logf("%d messages 1 ms apart, %d of them over %v late: %d round trips alone, %d pipelines carrying %d script calls (bound %d)",
		n, lateOnes, late, alone, pipes, piped, bound)
	if bound >= n {
		t.Errorf("%d of %d messages came over %v late: the machine is too slow for the test to tell lingering from not", lateOnes, n, late)
	}
	if alone+pipes > bound {
		t.Errorf("%d round trips for %d messages 1 ms apart (%d over %v late); want at most %d (they should linger and share)", alone+pipes, n, lateOnes, late, bound)
	}
	if piped != pipes {
		t.Errorf("%d pipelines carried %d script calls; want one each (the messages of one group share a call)", pipes, piped)
	}
}

// Records merge into one script call only with the record queued right
// before them: records of two groups queued in turns behind a round trip
// under way are as many calls, in one pipeline, and every member still gets
// its group's messages in order.
func TestRedisRecordMergesNeighboursOnly(t *testing.T) {
	const g1, g2 = "one", "two"
	srv, l, ch1, trips := countedLayer(t, g1)
	ch2 := newChan(t, l, g2)

	// A waited send held up by a paused Redis keeps the pipeline busy
	// while the records queue behind it.
	pause(t, srv.Addr(), 300*time.Millisecond)
	held := make(chan error, 1)
	go func() {
		_, err := l.GroupSendRecorded(tctx(t, 5*time.Second), g2, mustMsg(t, "chat", map[string]int{"n": -1}))
		held <- err
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return trips.alone.Load() > 0 }, "the held send under way")
	groups := []string{g1, g1, g1, g2, g1, g2, g2} // 4 runs of one group
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		l.GroupSendRecordedAsync(g, mustMsg(t, "chat", map[string]int{"n": i}), func(_ channellayer.Message, err error) {
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if err := <-held; err != nil {
		t.Fatalf("the held send: %v", err)
	}
	if !slices.Equal(order, []int{0, 1, 2, 3, 4, 5, 6}) {
		t.Fatalf("done called in the order %v, want call order", order)
	}
	for g, ch := range map[string]string{g1: ch1, g2: ch2} {
		want := []int{}
		if g == g2 {
			want = append(want, -1) // the held send went first
		}
		for i, mg := range groups {
			if mg == g {
				want = append(want, i)
			}
		}
		for _, i := range want {
			var b struct{ N int }
			if err := json.Unmarshal(recv(t, l, ch).Body, &b); err != nil {
				t.Fatal(err)
			}
			if b.N != i {
				t.Fatalf("group %s: got message %d, want %d", g, b.N, i)
			}
		}
		silent(t, l, ch)
	}
	alone, pipes, piped := trips.alone.Load(), trips.pipelines.Load(), trips.piped.Load()
	t.Logf("held send: %d round trip alone; %d records in 4 runs of one group: %d pipelines carrying %d script calls", alone, len(groups), pipes, piped)
	if alone != 1 || pipes != 1 || piped != 4 {
		t.Errorf("%d round trips alone and %d pipelines carrying %d script calls; want the held send alone, then one pipeline of 4 calls (one per run of one group)", alone, pipes, piped)
	}
}

// Every message sent without waiting gets its done exactly once, also when
// the layer closes while it lingers: recorded, or ErrClosed.
func TestRedisRecordAsyncClose(t *testing.T) {
	srv := redistest.Start(t)
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	const g = "room"
	if _, err := l.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "warm", nil)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	results := make(chan error, 10)
	for range 5 {
		l.GroupSendRecordedAsync(g, mustMsg(t, "late", nil), func(_ channellayer.Message, err error) {
			calls.Add(1)
			results <- err
		})
	}
	if err := l.Close(tctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 5 {
		t.Fatalf("after Close, %d of 5 sends had their done called", got)
	}
	for range 5 {
		if err := <-results; err != nil && !errors.Is(err, channellayer.ErrClosed) {
			t.Errorf("a send cut short by Close: %v, want nil or ErrClosed", err)
		}
	}
	l.GroupSendRecordedAsync(g, mustMsg(t, "after", nil), func(_ channellayer.Message, err error) { results <- err })
	if err := <-results; !errors.Is(err, channellayer.ErrClosed) {
		t.Fatalf("GroupSendRecordedAsync after Close: %v, want ErrClosed", err)
	}
}

// killPubSub ends every pub/sub connection of the Redis servers behind
// clients (CLIENT KILL TYPE pubsub).
func killPubSub(t testing.TB, clients ...*redis.Client) {
	t.Helper()
	for _, c := range clients {
		if err := c.Do(tctx(t, 5*time.Second), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// testManyGroupsRepaired: a layer with members in many groups loses its
// pub/sub connections (kill) while a peer records one message to each
// group. Every member gets its message once, and the layer repairs the
// gaps of all its groups in a few round trips, not one per group: repaired
// one at a time, a node with a thousand rooms was not ready for tens of
// seconds after a shard connection died on a loaded machine. Placing the
// groups in the first place reads their floors together too.
func testManyGroupsRepaired(t *testing.T, client redis.UniversalClient, peer *channellayer.Redis, prefix string, kill func()) {
	reads := &roundTrips{names: []string{"xrange", "xrevrange"}} // history reads
	client.AddHook(reads)
	a := openRedisLayer(t, client, prefix, channellayer.RedisOptions{}, 10*time.Second)
	const n = 200
	groups := make([]string, n)
	chs := make([]string, n)
	for i := range groups {
		groups[i] = "many-" + strconv.Itoa(i)
	}
	// Placed at once: the joins of a node's first seconds.
	errs := make(chan error, n)
	for i := range groups {
		go func() {
			ch, err := a.NewChannel(tctx(t, 5*time.Second))
			if err == nil {
				err = a.GroupAdd(tctx(t, 10*time.Second), groups[i], ch)
			}
			chs[i] = ch
			errs <- err
		}()
	}
	for range n {
		if err := testkit.Receive(t, errs, 15*time.Second, "a group added"); err != nil {
			t.Fatal(err)
		}
	}
	placing := reads.alone.Load() + reads.pipelines.Load()
	t.Logf("placing %d groups at once read their floors in %d round trips (%d alone, %d in %d pipelines)", n, placing, reads.alone.Load(), reads.piped.Load(), reads.pipelines.Load())
	if placing > n/4 {
		t.Errorf("placing %d groups at once took %d history round trips; want at most %d (their floors read together)", n, placing, n/4)
	}
	send := func(seq int) {
		for _, g := range groups {
			msg := mustMsg(t, "chat", map[string]int{"n": seq})
			testkit.EventuallyNil(t, 10*time.Second, func() error {
				_, err := peer.GroupSendRecorded(tctx(t, time.Second), g, msg)
				return err
			}, "recorded send")
		}
	}
	send(0)
	for i := range groups {
		if got := seqOf(t, recv(t, a, chs[i])); got != 0 {
			t.Fatalf("group %s: got message %d, want 0", groups[i], got)
		}
	}
	reads.reset()
	kill()
	send(1)
	for i := range groups {
		if got := seqOf(t, recv(t, a, chs[i])); got != 1 {
			t.Fatalf("group %s: got message %d, want 1", groups[i], got)
		}
	}
	testkit.EventuallyNil(t, 10*time.Second, func() error { return a.Check(tctx(t, time.Second)) }, "the layer ready again")
	silent(t, a, chs[0]) // a moment for duplicates to come; then none waits anywhere
	for i := range groups {
		if m, ok, err := a.TryReceive(chs[i]); ok || err != nil {
			t.Fatalf("group %s: a second message after the kill: %s (err %v)", groups[i], m.Body, err)
		}
	}
	trips := reads.alone.Load() + reads.pipelines.Load()
	t.Logf("after the kill: %d history reads in %d round trips (%d alone, %d in %d pipelines)", reads.alone.Load()+reads.piped.Load(), trips, reads.alone.Load(), reads.piped.Load(), reads.pipelines.Load())
	if reads.alone.Load()+reads.piped.Load() < n {
		t.Errorf("%d history reads after the kill, want one per group (%d): the gaps were not repaired", reads.alone.Load()+reads.piped.Load(), n)
	}
	if trips > 12 {
		t.Errorf("the gaps of %d groups took %d round trips; want at most 12 (read together)", n, trips)
	}
}

// gateHook holds a pipeline that carries a message of type "gated" until
// open is closed, and tells entered when it does.
type gateHook struct{ entered, open chan struct{} }

func (gateHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if slices.Contains(c.Args(), any("gated")) {
				h.entered <- struct{}{}
				<-h.open
				break
			}
		}
		return next(ctx, cmds)
	}
}

// While a round trip is under way, an unwaited record of a group that is
// not in it goes at once in a second round trip; a record of a group that
// is in it waits for it, and so does everything behind a command that is
// not an unwaited record. Each group's messages arrive in order.
func TestRedisRecordPassesOtherGroups(t *testing.T) {
	const held, other, third = "held", "other", "third"
	srv := redistest.Start(t)
	client := newClient(t, srv.Addr())
	gate := gateHook{entered: make(chan struct{}, 1), open: make(chan struct{})}
	client.AddHook(gate)
	var opened atomic.Bool
	open := sync.OnceFunc(func() { opened.Store(true); close(gate.open) })
	l := openRedisLayer(t, client, newPrefix(), channellayer.RedisOptions{}, 5*time.Second)
	t.Cleanup(open) // before the layer closes: a failed test leaves no round trip held
	chHeld, chOther, chThird := newChan(t, l, held), newChan(t, l, other), newChan(t, l, third)
	if _, err := l.GroupSendRecorded(tctx(t, 5*time.Second), held, mustMsg(t, "warm", nil)); err != nil {
		t.Fatal(err) // the script loaded
	}
	recv(t, l, chHeld)

	done := make(chan string, 4)
	async := func(g, typ string) {
		l.GroupSendRecordedAsync(g, mustMsg(t, typ, nil), func(_ channellayer.Message, err error) {
			if err != nil {
				t.Errorf("%s: %v", typ, err)
			}
			if typ != "other-1" && !opened.Load() {
				t.Errorf("%s was done while the gated round trip was held; it should have waited for it", typ)
			}
			done <- typ
		})
	}
	async(held, "gated")
	testkit.Receive(t, gate.entered, 5*time.Second, "the gated round trip under way")
	async(held, "held-2")
	if n := l.Queued(held); n != 1 {
		t.Fatalf("a record of the group under way: %d commands queued, want 1 (it waits)", n)
	}
	async(other, "other-1")
	if n := l.Queued(other); n != 1 {
		t.Fatalf("a record of another group: %d commands queued, want 1 (only the first group's)", n)
	}
	if got := testkit.Receive(t, done, 5*time.Second, "the record of another group done"); got != "other-1" {
		t.Fatalf("%s done first, want other-1", got)
	}

	// A plain send waits, and a record of a third group behind it too.
	sent := make(chan error, 1)
	go func() { sent <- l.GroupSend(tctx(t, 5*time.Second), third, mustMsg(t, "plain", nil)) }()
	testkit.Eventually(t, 5*time.Second, func() bool { return l.Queued(third) == 2 }, "the plain send queued")
	async(third, "third-1")
	if n := l.Queued(third); n != 3 {
		t.Fatalf("a record behind a plain send: %d commands queued, want 3 (it must not pass the send)", n)
	}

	open()
	if err := testkit.Receive(t, sent, 5*time.Second, "the plain send"); err != nil {
		t.Fatal(err)
	}
	var order []string
	for range 3 {
		order = append(order, testkit.Receive(t, done, 5*time.Second, "a record done"))
	}
	if want := []string{"gated", "held-2", "third-1"}; !slices.Equal(order, want) {
		t.Errorf("records done in the order %v after the gate opened, want %v", order, want)
	}
	for ch, want := range map[string][]string{chHeld: {"gated", "held-2"}, chOther: {"other-1"}, chThird: {"plain", "third-1"}} {
		for _, typ := range want {
			if m := recv(t, l, ch); m.Type != typ {
				t.Fatalf("got a message of type %q, want %q", m.Type, typ)
			}
		}
		silent(t, l, ch)
	}
}
