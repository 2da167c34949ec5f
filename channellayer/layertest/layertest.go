package layertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Setup describes one backend under test, built on a fresh, empty store.
type Setup struct {
	// Layer is the layer under test. The store under it must be empty and
	// shared with no other test (a fresh Redis database, or a key prefix of
	// its own). Required.
	Layer channellayer.Layer

	// Peer returns another layer on the same store, standing in for another
	// process. The suite calls it at most once per rule. Nil means the
	// backend is one process only (Memory): Layer stands in for both.
	Peer func(t *testing.T) channellayer.Layer

	// Capacity is the channel capacity the backend was built with.
	// Defaults to channellayer.DefaultCapacity. Keep it small (16 or so).
	Capacity int
	// Expiry is how long a message waits in a channel before it is dropped,
	// as the backend was built. Required: between 100 ms and 5 s, so the
	// expiry rules stay fast (400 ms is a good value).
	Expiry time.Duration
	// HistorySize is how many messages a group's history keeps, as the
	// backend was built. Defaults to channellayer.DefaultHistorySize. Keep it
	// small (16 or so).
	HistorySize int

	// Sleep lets d of the store's time pass. Defaults to time.Sleep. A
	// store with a clock of its own (miniredis) sleeps d of real time and
	// then advances its clock by d.
	Sleep func(d time.Duration)

	// Restart, if set, stops the server under the layers, calls down while
	// it is away, then starts it again on the same address and returns once
	// it accepts connections (its data may be lost). Nil for backends with
	// no server. The restart rule runs alone: no other rule of the same Run
	// runs meanwhile. Restart may call t.Fatal.
	Restart func(t *testing.T, down func())
}

// Timing of the suite.
const (
	// waitFor bounds every wait for something that must happen.
	waitFor = 5 * time.Second
	// quiet is how long the suite watches for something that must not
	// happen (a duplicate, a message to a non-member).
	quiet = 150 * time.Millisecond
	// prompt bounds calls that must not wait for anybody (a group send to a
	// full channel, a Receive whose context was cancelled).
	prompt = time.Second
)

// rule is one named check of the suite.
type rule struct {
	name   string
	serial bool // runs alone, before the parallel rules
	check  func(e *env)
}

// rules is the suite, in the order it runs.
var rules = []rule{
	{"Restart", true, checkRestart},

	{"NewChannel", false, checkNewChannel},
	{"SendReceive", false, checkSendReceive},
	{"ReceiveContext", false, checkReceiveContext},
	{"NoChannel", false, checkNoChannel},
	{"Invalid", false, checkInvalid},
	{"Closed", false, checkClosed},

	{"GroupSend", false, checkGroupSend},
	{"GroupDiscard", false, checkGroupDiscard},
	{"DiscardChannel", false, checkDiscardChannel},
	{"Order", false, checkOrder},
	{"OrderConcurrent", false, checkOrderConcurrent},
	{"Body", false, checkBody},
	{"Notify", false, checkNotify},
	{"Drain", false, checkDrain},
	{"GroupSendExcept", false, checkGroupSendExcept},

	{"Capacity", false, checkCapacity},
	{"GroupOverflow", false, checkGroupOverflow},
	{"Expiry", false, checkExpiry},
	{"ExpiryFreesCapacity", false, checkExpiryFreesCapacity},

	{"Presence", false, checkPresence},
	{"PresenceTTL", false, checkPresenceTTL},
	{"PresenceExpireOnce", false, checkPresenceExpireOnce},
	{"PresenceTrackAll", false, checkPresenceTrackAll},
	{"PresenceExpireAll", false, checkPresenceExpireAll},
	{"PresenceListAll", false, checkPresenceListAll},
	{"PresenceSweepAll", false, checkPresenceSweepAll},
	{"TrackerMerge", false, checkTrackerMerge},
	{"TrackerDiffs", false, checkTrackerDiffs},
	{"TrackerBurst", false, checkTrackerBurst},
	{"TrackerGrace", false, checkTrackerGrace},
	{"TrackerFinal", false, checkTrackerFinal},
	{"TrackerRefreshAndDeath", false, checkTrackerRefreshAndDeath},

	{"HistoryRecord", false, checkHistoryRecord},
	{"HistoryRecordAsync", false, checkHistoryRecordAsync},
	{"HistorySince", false, checkHistorySince},
	{"HistoryTrim", false, checkHistoryTrim},
	{"HistoryCluster", false, checkHistoryCluster},
	{"Recovery", false, checkRecovery},
	{"HistoryRecordOnce", false, checkHistoryRecordOnce},
	{"HistoryRecordOnceTrim", false, checkHistoryRecordOnceTrim},
	{"HistoryBefore", false, checkHistoryBefore},

	{"Directory", false, checkDirectory},
	{"DirectorySetCounts", false, checkDirectorySetCounts},
}

// Run runs the conformance suite: one subtest of t per rule, each on a
// fresh store from newSetup. Most rules run in parallel, so newSetup must be
// safe to call concurrently. Rules about an optional capability (History,
// Presence, Notifier, Drainer, Recorder, Restart) are skipped, saying why,
// when the backend does not have it.
//
// The suite closes Layer and every layer Peer returns when a rule ends,
// before the cleanups newSetup registered run; closing a layer twice
// (newSetup closing it too) must be harmless. Layers must be comparable
// values (pointers), so that one instance is closed once.
func Run(t *testing.T, newSetup func(t *testing.T) Setup) {
	t.Helper()
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			if !r.serial {
				t.Parallel()
			}
			r.check(newEnv(t, newSetup))
		})
	}
}

// env is the world of one rule: its setup and the layers it uses.
type env struct {
	t       *testing.T
	s       Setup
	a       channellayer.Layer // the layer under test
	b       channellayer.Layer // a peer, or a itself for one process; see peer
	group   int                // for fresh group names
	closing []channellayer.Layer
	mu      sync.Mutex
}

func newEnv(t *testing.T, newSetup func(t *testing.T) Setup) *env {
	t.Helper()
	s := newSetup(t)
	switch {
	case s.Layer == nil:
		t.Fatal("layertest: Setup.Layer is nil")
	case s.Expiry < 100*time.Millisecond || s.Expiry > 5*time.Second:
		t.Fatalf("layertest: Setup.Expiry is %v; build the backend with an expiry between 100ms and 5s and say so in Setup", s.Expiry)
	case s.Capacity < 0 || s.HistorySize < 0:
		t.Fatal("layertest: negative Setup.Capacity or Setup.HistorySize")
	}
	if s.Capacity == 0 {
		s.Capacity = channellayer.DefaultCapacity
	}
	if s.HistorySize == 0 {
		s.HistorySize = channellayer.DefaultHistorySize
	}
	if s.Sleep == nil {
		s.Sleep = time.Sleep
	}
	e := &env{t: t, s: s, a: s.Layer}
	e.closeAtEnd(s.Layer)
	return e
}

// closeAtEnd closes l when the rule ends, once per instance.
func (e *env) closeAtEnd(l channellayer.Layer) {
	for _, c := range e.closing {
		if sameLayer(c, l) {
			return
		}
	}
	e.closing = append(e.closing, l)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		start := time.Now()
		err := l.Close(ctx)
		if err != nil && !errors.Is(err, channellayer.ErrClosed) {
			e.t.Errorf("Close: %v", err)
		}
		if d := time.Since(start); d > waitFor {
			e.t.Errorf("Close took %v", d)
		}
	})
}

func sameLayer(x, y channellayer.Layer) bool {
	if x == nil || y == nil {
		return false
	}
	if !reflect.TypeOf(x).Comparable() || !reflect.TypeOf(y).Comparable() {
		return false
	}
	return x == y
}

// peer returns the layer standing in for another process.
func (e *env) peer() channellayer.Layer {
	e.t.Helper()
	if e.b != nil {
		return e.b
	}
	if e.s.Peer == nil {
		e.b = e.a
		return e.b
	}
	b := e.s.Peer(e.t)
	if b == nil {
		e.t.Fatal("layertest: Setup.Peer returned nil")
	}
	e.closeAtEnd(b)
	e.b = b
	return b
}

// both returns the layer and its peer (the same layer twice for one process).
func (e *env) both() []channellayer.Layer {
	return []channellayer.Layer{e.a, e.peer()}
}

// name returns a fresh group name for this rule.
func (e *env) name(what string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.group++
	return fmt.Sprintf("layertest-%s-%d", what, e.group)
}

// ctx returns a context for one bounded call or wait.
func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(e.t.Context(), d)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) newChannel(l channellayer.Layer) string {
	e.t.Helper()
	name, err := l.NewChannel(e.ctx(waitFor))
	if err != nil {
		e.t.Fatalf("NewChannel: %v", err)
	}
	if name == "" {
		e.t.Fatal("NewChannel returned an empty name")
	}
	return name
}

func (e *env) join(l channellayer.Layer, group string, channels ...string) {
	e.t.Helper()
	for _, ch := range channels {
		if err := l.GroupAdd(e.ctx(waitFor), group, ch); err != nil {
			e.t.Fatalf("GroupAdd(%q, %q): %v", group, ch, err)
		}
	}
}

func (e *env) send(l channellayer.Layer, channel string, m channellayer.Message) {
	e.t.Helper()
	if err := l.Send(e.ctx(waitFor), channel, m); err != nil {
		e.t.Fatalf("Send(%q, %s): %v", channel, m.Body, err)
	}
}

func (e *env) groupSend(l channellayer.Layer, group string, m channellayer.Message) {
	e.t.Helper()
	if err := l.GroupSend(e.ctx(waitFor), group, m); err != nil {
		e.t.Fatalf("GroupSend(%q, %s): %v", group, m.Body, err)
	}
}

// recv waits for the next message on a channel.
func (e *env) recv(l channellayer.Layer, channel string) channellayer.Message {
	e.t.Helper()
	m, err := l.Receive(e.ctx(waitFor), channel)
	if err != nil {
		e.t.Fatalf("Receive(%q): %v (waited up to %v)", channel, err, waitFor)
	}
	return m
}

// recvBody waits for the next message and checks its body.
func (e *env) recvBody(l channellayer.Layer, channel string, want channellayer.Message) {
	e.t.Helper()
	got := e.recv(l, channel)
	if string(got.Body) != string(want.Body) {
		e.t.Fatalf("Receive(%q) = %s, want %s", channel, got.Body, want.Body)
	}
}

// silent checks that nothing arrives on a channel for a while.
func (e *env) silent(l channellayer.Layer, channel, why string) {
	e.t.Helper()
	m, err := l.Receive(e.ctx(quiet), channel)
	switch {
	case err == nil:
		e.t.Errorf("%s: Receive(%q) = %s, want nothing", why, channel, m.Body)
	case !errors.Is(err, context.DeadlineExceeded):
		e.t.Errorf("%s: Receive(%q) with a short context: %v, want %v", why, channel, err, context.DeadlineExceeded)
	}
}

// seq is the payload of a numbered test message.
type seq struct {
	Sender int `json:"sender"`
	N      int `json:"n"`
}

func (e *env) msg(typ string, v any) channellayer.Message {
	e.t.Helper()
	m, err := channellayer.NewMessage(typ, v)
	if err != nil {
		e.t.Fatalf("NewMessage: %v", err)
	}
	return m
}

func (e *env) seqMsg(sender, n int) channellayer.Message {
	return e.msg("test.seq", seq{sender, n})
}

func decodeSeq(m channellayer.Message) (seq, error) {
	var s seq
	if m.Type != "test.seq" {
		return s, fmt.Errorf("message of type %q, want test.seq: %s", m.Type, m.Body)
	}
	if err := json.Unmarshal(m.Body, &s); err != nil {
		return s, fmt.Errorf("decoding %s: %v", m.Body, err)
	}
	return s, nil
}

// within fails the rule if f takes longer than d.
func (e *env) within(d time.Duration, what string, f func()) {
	e.t.Helper()
	start := time.Now()
	f()
	if took := time.Since(start); took > d {
		e.t.Errorf("%s took %v, want at most %v", what, took, d)
	}
}
