// Package dispatch hands a connection's layer events to its consumer on a
// goroutine that runs only while events wait, and paces the events of a
// connection that come fast so that they are handled, and written,
// together.
package dispatch

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
)

// Host is the connection a Dispatcher serves. Its methods are called on
// the dispatcher's goroutine. Handle is called by one dispatcher at a
// time; a dispatcher's End may still run when the next one's Begin is
// called (the next one starts once the last has taken every event).
type Host interface {
	// Context is the connection's: dispatching ends when it is done.
	Context() context.Context
	// Handle hands events to the consumer, in their order, until the
	// context is done: it reports whether it handed over every one. The
	// events of one call are those the dispatcher took at once, so that
	// the host does once for all of them what it would do for each (take
	// the consumer's lock). The slice is the dispatcher's again when
	// Handle returns.
	Handle(msgs []channellayer.Message) bool
	// Failed reports that receiving from the channel failed: the
	// dispatcher has stopped for good.
	Failed(err error)
	// Begin and End bracket a dispatcher's run: what the handlers send in
	// between may be written once, at End.
	Begin()
	End()
}

// PaceCap is how many events may wait for a paced dispatcher before it
// starts at once, well before the layer's channel (100 by default) fills.
const PaceCap = 32

// A connection's events are paced while they come more than paceGather
// to a coalescing window on average (paceGather = paceNum/paceDen): a
// window that gathers fewer costs their latency and saves next to no
// writes. The average is of the time between events, moving by 1/gapWeight
// of each new measure, so that events of several senders, which come
// irregularly, are judged by their rate.
//
// A connection whose events come more than paceBusy to a window (busyNum/
// busyDen: 875 a second at the default 4 ms) is paced busySpanNum/
// busySpanDen windows apart (10 ms at the default): at 1 111 events a
// second in a room of 500, two windows instead of one cut the CPU per
// delivery by a fifth on every layer, and the p99 latency with it, for 1
// to 2 ms more at the median; two and a half cut another 3 to 8 % for 0.5
// to 1.5 ms more. Three cut 11 to 15 %, but their 1 to 3 ms more put the
// median on Redis at 1.17 times centrifuge's at that step (BENCHMARKS.md,
// "Three windows over 3.5 events" and "What a node spends at 1 111
// messages/s").
//
// A connection whose events come more than paceFlood to a window (1 250 a
// second at the default 4 ms) is paced floodWindows windows apart: at that
// rate the node's CPU, most of it in the write system calls, is what holds
// the latency. In a room of 500 at 1 556 events a second its CPU per
// delivery was 0.51 to 0.53 µs on the memory layer, 0.66 to 0.67 on Redis
// and 0.74 to 0.76 over two nodes, against centrifuge's 1.48 to 1.70, and
// its median latency within 1.14 times centrifuge's at every step of the
// ladder (two full sets on 7fb76d1). Three flood windows cost 0.57 and
// 0.55 times centrifuge's CPU on Redis and over two nodes (on 9b2e14e);
// 10 ms, two for a flood, up to 3 times centrifuge's median
// (BENCHMARKS.md, "A faster machine, and a window of 4 ms" and the full
// sets after it).
const (
	paceNum, paceDen = 5, 2 // paceGather: 2.5 events
	busyNum, busyDen = 7, 2 // paceBusy: 3.5 events
	busySpanNum      = 5    // busy: 2.5 windows
	busySpanDen      = 2
	paceFlood        = 5
	floodWindows     = 5
	gapWeight        = 4
	maxGap           = math.MaxInt32 // ns: a gap of 2 s or more is counted as 2 s
)

// Dispatcher runs the dispatcher of one connection's channel.
//
// On a layer with channellayer.Notifier, no goroutine waits for events: the
// layer's arrival callback (Kick) starts a dispatcher unless one runs or is
// due; the dispatcher drains the channel and ends. On other layers one
// goroutine waits in Receive for the connection's life.
//
// Ownership: the fields set by Init never change. kicks counts the kicks
// not yet handled (arrivals on an empty channel, and those that are not
// messages; see Kick); the kick that takes it from 0 starts (or paces) the one
// dispatcher, and only the dispatcher brings it back to 0, so at most one
// runs. kickAt, dueAt and gap belong to that kick: the counter orders one
// such kick after the other; the dispatcher it starts may move dueAt back
// (started) before that swap. took is the dispatcher's, written before the
// swap to 0 that the next such kick follows. The pacing timer and paced
// are under mu.
type Dispatcher struct {
	cfg     *Config // the server's, shared by its connections
	channel string
	tasks   *tasks.Group
	host    Host
	goRun   func() // run as a func value made once: "go d.goRun()" allocates nothing

	kicks atomic.Int64

	kickAt int64 // when the last kick from 0 came (monoNow; 0: none yet)
	dueAt  int64 // when the last dispatcher was due (monoNow)
	gap    int32 // the moving average of the time between events, in ns (at most maxGap)
	took   int32 // the events the last dispatcher handled

	mu    sync.Mutex
	timer *time.Timer // starts a paced dispatcher; made on first use
	paced bool        // timer is set and has not fired
}

// Config is what the dispatchers of one server share: made once, it keeps
// each connection's Dispatcher small.
type Config struct {
	layer    channellayer.Layer
	notifier channellayer.Notifier // nil: receiveLoop
	drainer  channellayer.Drainer  // nil: one event per call
	coalesce time.Duration
}

// NewConfig returns the configuration of dispatchers of channels on layer
// that pace bursts with the window coalesce (0 or less: never).
func NewConfig(layer channellayer.Layer, coalesce time.Duration) *Config {
	c := &Config{layer: layer, coalesce: coalesce}
	c.notifier, _ = layer.(channellayer.Notifier)
	c.drainer, _ = layer.(channellayer.Drainer)
	return c
}

// Init prepares d to dispatch the events of channel as cfg says to host,
// on goroutines counted by g, until the host's context is done.
func (d *Dispatcher) Init(cfg *Config, channel string, g *tasks.Group, host Host) {
	d.cfg, d.channel, d.tasks, d.host = cfg, channel, g, host
	d.goRun = d.run
}

// Start begins dispatching: it registers Kick with the layer, or starts the
// receiving goroutine.
func (d *Dispatcher) Start() error {
	if d.cfg.notifier == nil {
		d.tasks.Go(d.receiveLoop)
		return nil
	}
	return d.cfg.notifier.Notify(d.channel, d.Kick)
}

// Stop unregisters Kick; the goroutines end with ctx (see tasks.Group.Stop).
func (d *Dispatcher) Stop() {
	if d.cfg.notifier != nil {
		_ = d.cfg.notifier.Notify(d.channel, nil)
	}
}

// Kick is the layer's arrival callback (see channellayer.Notifier): it
// starts a dispatcher unless one is running or due. It never blocks. Only
// an arrival on an empty channel (waiting 1), or one that is not a message
// (0), touches the kick counter: the others join the dispatcher that such
// an arrival started, or hurry it when PaceCap of them wait.
func (d *Dispatcher) Kick(waiting int) {
	if waiting > 1 {
		if waiting == PaceCap {
			d.hurry()
		}
		return
	}
	if d.kicks.Add(1) == 1 {
		d.start()
	}
	if waiting <= 0 {
		d.hurry() // an overflow or the end: no pacing
	}
}

// start starts the dispatcher of a kick from 0, at once or paced.
func (d *Dispatcher) start() {
	if wait := d.pace(monoNow()); wait > 0 {
		d.mu.Lock()
		if d.timer == nil {
			d.timer = time.AfterFunc(wait, d.runPaced)
		} else {
			d.timer.Reset(wait)
		}
		d.paced = true
		d.mu.Unlock()
		return
	}
	if d.tasks.Add() {
		go d.goRun()
	}
}

// hurry starts a paced dispatcher now, if its timer has not fired.
func (d *Dispatcher) hurry() {
	d.mu.Lock()
	start := d.paced && d.timer.Stop()
	if start {
		d.paced = false
	}
	d.mu.Unlock()
	if start && d.tasks.Add() {
		go d.goRun()
	}
}

// pace returns how long the dispatcher of a kick from 0 at now (monoNow)
// must wait: nothing unless the connection's events come more than
// paceGather to a coalesce window on average; then until coalesce
// (2.5 of them over paceBusy, floodWindows for a flood: paceFlood)
// after the previous dispatcher was due, so that they are handled, and
// written, together.
func (d *Dispatcher) pace(now int64) time.Duration {
	w := int64(d.cfg.coalesce)
	if w <= 0 {
		return 0
	}
	if d.kickAt != 0 {
		// The last dispatcher took the events that came from its kick to
		// this one.
		sample := min((now-d.kickAt)/int64(max(d.took, 1)), maxGap)
		if d.gap == 0 {
			d.gap = int32(sample)
		} else {
			d.gap += int32((sample - int64(d.gap)) / gapWeight)
		}
	}
	d.kickAt = now
	if d.gap == 0 || int64(d.gap)*paceNum >= w*paceDen {
		d.dueAt = now
		return 0
	}
	switch {
	case int64(d.gap)*paceFlood < w:
		w *= floodWindows // a flood
	case int64(d.gap)*busyNum < w*busyDen:
		w = w * busySpanNum / busySpanDen
	}
	due := d.dueAt + w
	if due <= now {
		d.dueAt = now
		return 0
	}
	d.dueAt = due
	return time.Duration(due - now)
}

var clockBase = time.Now()

// monoNow reads the monotonic clock, in nanoseconds.
func monoNow() int64 { return int64(time.Since(clockBase)) }

// runPaced is the dispatcher of a paced kick, on the timer's goroutine.
func (d *Dispatcher) runPaced() {
	d.mu.Lock()
	d.paced = false
	d.mu.Unlock()
	if d.tasks.Add() {
		d.run()
	}
}

// run is a dispatcher, on a goroutine counted by tasks.Add.
func (d *Dispatcher) run() {
	defer d.tasks.Done()
	tasks.GrowStack()
	d.started(monoNow())
	d.dispatch()
}

// started notes when a dispatcher began (monoNow): one hurried before it
// was due (PaceCap events waiting, or an overflow) moves the due time back
// to now, so that the next window counts from this dispatcher, not from a
// time nobody waited for. Without it a flood that fills PaceCap before its
// windows pass pushed the due time further ahead with every batch: at
// 3 049 events a second, paced five 4 ms windows apart and hurried every
// 32 events, the last events before a pause waited over 2 s.
func (d *Dispatcher) started(now int64) {
	if now < d.dueAt {
		d.dueAt = now
	}
}

// dispatch hands waiting events to the host, then stops. A kick that
// arrives while it drains makes it look again before it stops, so no event
// is left waiting without a dispatcher.
func (d *Dispatcher) dispatch() {
	d.host.Begin()
	defer d.host.End()
	took := 0
	for {
		seen := d.kicks.Load()
		var n int
		var ok bool
		if d.cfg.drainer != nil {
			n, ok = d.dispatchAll()
		} else {
			n, ok = d.dispatchEach()
		}
		if !ok {
			return // closing: kicks stay non-zero, no dispatcher starts again
		}
		took += n
		d.took = int32(min(took, math.MaxInt32)) // before the swap: the next kick from 0 reads it
		if d.kicks.CompareAndSwap(seen, 0) {
			return
		}
	}
}

// eventBufs hold the events a dispatcher took at once, between uses.
var eventBufs = sync.Pool{New: func() any { return new([]channellayer.Message) }}

// dispatchAll hands every waiting event to the host, taken from the layer
// in one call, and returns how many it took; false if the connection is
// closing.
func (d *Dispatcher) dispatchAll() (int, bool) {
	ctx := d.host.Context()
	if ctx.Err() != nil {
		return 0, false
	}
	buf := eventBufs.Get().(*[]channellayer.Message)
	msgs, err := d.cfg.drainer.TryReceiveAll(d.channel, (*buf)[:0])
	n, ok := len(msgs), true
	if n > 0 {
		ok = d.host.Handle(msgs)
	}
	putEvents(buf, msgs)
	if ok && err != nil {
		d.host.Failed(err)
		ok = false
	}
	return n, ok
}

// putEvents gives msgs, taken in buf, back to eventBufs.
func putEvents(buf *[]channellayer.Message, msgs []channellayer.Message) {
	clear(msgs) // the pool keeps no bodies alive
	if cap(msgs) <= 1024 {
		*buf = msgs[:0]
		eventBufs.Put(buf)
	}
}

// eachBatch is how many events dispatchEach takes before it hands them over.
const eachBatch = 64

// dispatchEach is dispatchAll for a layer that hands out one event per
// call: it takes up to eachBatch at a time.
func (d *Dispatcher) dispatchEach() (int, bool) {
	ctx := d.host.Context()
	buf := eventBufs.Get().(*[]channellayer.Message)
	msgs := (*buf)[:0]
	defer func() { putEvents(buf, msgs) }()
	for n := 0; ; {
		if ctx.Err() != nil {
			return n, false
		}
		m, ok, err := d.cfg.notifier.TryReceive(d.channel)
		if ok {
			msgs = append(msgs, m)
		}
		if len(msgs) > 0 && (!ok || err != nil || len(msgs) == eachBatch) {
			n += len(msgs)
			if !d.host.Handle(msgs) {
				return n, false
			}
			clear(msgs)
			msgs = msgs[:0]
		}
		if err != nil {
			d.host.Failed(err)
			return n, false
		}
		if !ok {
			return n, true
		}
	}
}

// receiveLoop serves layers without Notifier: a goroutine waits in Receive.
func (d *Dispatcher) receiveLoop() {
	one := make([]channellayer.Message, 1)
	for {
		m, err := d.cfg.layer.Receive(d.host.Context(), d.channel)
		if err != nil {
			d.host.Failed(err)
			return
		}
		one[0] = m
		d.host.Handle(one)
		one[0] = channellayer.Message{}
	}
}
