package layertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

const (
	// callBound is how long any call may take while the server is away:
	// its context's timeout (callTimeout) plus some slack.
	callTimeout = 2 * time.Second
	callBound   = callTimeout + time.Second
	// recoverWithin bounds how long after the server is back group sends
	// reach every member again.
	recoverWithin = 10 * time.Second
)

// checkRestart: while the server is away calls return within a bound and
// Check fails; after it is back, group sends reach members on both
// processes again, once each and in order, and Check passes.
func checkRestart(e *env) {
	if e.s.Restart == nil {
		e.t.Skip("Setup.Restart is nil (the backend has no server to restart): rule does not apply")
		return
	}
	a, b := e.a, e.peer()
	g := e.name("g")
	members := []member{e.member(a), e.member(b)}
	for _, m := range members {
		e.join(m.l, g, m.name)
	}
	m0 := e.seqMsg(0, 0)
	e.groupSend(a, g, m0)
	for _, m := range members {
		e.recvBody(m.l, m.name, m0)
	}
	for _, l := range e.both() {
		if c, ok := l.(channellayer.Checker); ok {
			if err := c.Check(e.ctx(waitFor)); err != nil {
				e.t.Fatalf("Check before the restart: %v", err)
			}
		}
	}

	// Load on both processes through the whole restart: every call must
	// return within callBound, error or not, and nothing may panic.
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		problems []string
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	load := e.name("load")
	for i, l := range e.both() {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					report("layer %d panicked: %v", i, p)
				}
			}()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				for _, c := range loadCalls(l, load, e.seqMsg(i, n)) {
					ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
					start := time.Now()
					c.call(ctx)
					cancel()
					if took := time.Since(start); took > callBound {
						report("layer %d: %s took %v, want at most %v", i, c.name, took, callBound)
					}
				}
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	e.s.Restart(e.t, func() {
		// Check reports the outage.
		for i, l := range e.both() {
			c, ok := l.(channellayer.Checker)
			if !ok {
				continue
			}
			err := testkit.Poll(waitFor, func() error {
				ctx, cancel := context.WithTimeout(e.t.Context(), callTimeout)
				defer cancel()
				if c.Check(ctx) == nil {
					return errors.New("Check returned nil")
				}
				return nil
			})
			if err != nil {
				e.t.Errorf("layer %d: Check kept returning nil for %v while the server was away", i, waitFor)
			}
		}
		// The outage is noticed everywhere (Check fails): send into it.
		for i, l := range e.both() {
			ctx, cancel := context.WithTimeout(e.t.Context(), callTimeout)
			start := time.Now()
			_ = l.GroupSend(ctx, g, e.seqMsg(9, i))
			cancel()
			if took := time.Since(start); took > callBound {
				e.t.Errorf("layer %d: GroupSend while the server was away took %v, want at most %v", i, took, callBound)
			}
		}
	})

	e.awaitRecovery(g, members)

	for i, l := range e.both() {
		c, ok := l.(channellayer.Checker)
		if !ok {
			continue
		}
		err := testkit.Poll(recoverWithin, func() error {
			ctx, cancel := context.WithTimeout(e.t.Context(), callTimeout)
			defer cancel()
			return c.Check(ctx)
		})
		if err != nil {
			e.t.Errorf("layer %d: Check still fails %v after the server came back: %v", i, recoverWithin, err)
		}
	}
	close(stop)
	wg.Wait()
	if len(problems) > 0 {
		e.t.Errorf("calls during the restart:\n%s", strings.Join(problems, "\n"))
	}

	// Back to normal: each member gets each sender's messages once, in order.
	for _, m := range members {
		e.drain(m)
	}
	const n = 5
	for s, l := range e.both() {
		for i := range n {
			e.groupSend(l, g, e.seqMsg(20+s, i))
		}
	}
	for _, m := range members {
		next := map[int]int{20: 0, 21: 0}
		for range 2 * n {
			got, err := decodeSeq(e.recv(m.l, m.name))
			if err != nil {
				e.t.Fatal(err)
			}
			if want, ok := next[got.Sender]; !ok || got.N != want {
				e.t.Fatalf("after the restart, member %q received %+v, want message %d of sender %d", m.name, got, want, got.Sender)
			}
			next[got.Sender]++
		}
		e.silent(m.l, m.name, "member after the messages sent after the restart")
	}
}

type loadCall struct {
	name string
	call func(ctx context.Context)
}

// loadCalls are the calls made on a layer while its server restarts.
func loadCalls(l channellayer.Layer, group string, m channellayer.Message) []loadCall {
	calls := []loadCall{
		{"GroupSend", func(ctx context.Context) { _ = l.GroupSend(ctx, group, m) }},
		{"NewChannel, GroupAdd, Send, Receive, GroupDiscard, DiscardChannel", func(ctx context.Context) {
			c, err := l.NewChannel(ctx)
			if err != nil {
				return
			}
			_ = l.GroupAdd(ctx, group, c)
			_ = l.Send(ctx, c, m)
			rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, _ = l.Receive(rctx, c)
			cancel()
			_ = l.GroupDiscard(ctx, group, c)
			_ = l.DiscardChannel(ctx, c)
		}},
	}
	if c, ok := l.(channellayer.Checker); ok {
		calls = append(calls, loadCall{"Check", func(ctx context.Context) { _ = c.Check(ctx) }})
	}
	if h, ok := l.(channellayer.History); ok {
		calls = append(calls, loadCall{"GroupSendRecorded, Recent", func(ctx context.Context) {
			_, _ = h.GroupSendRecorded(ctx, group, m)
			_, _ = h.Recent(ctx, group, 5)
		}})
	}
	if p, ok := l.(channellayer.Presence); ok {
		calls = append(calls, loadCall{"Track, List, Expire", func(ctx context.Context) {
			_ = p.Track(ctx, group, "load", []byte("x"), time.Second)
			_, _ = p.List(ctx, group)
			_, _ = p.Expire(ctx, group)
		}})
	}
	return calls
}

// awaitRecovery group sends from both processes until every member has
// received a message from each, or fails after recoverWithin.
func (e *env) awaitRecovery(g string, members []member) {
	e.t.Helper()
	senders := e.both()
	got := make([][]bool, len(members)) // got[member][sender]
	for i := range got {
		got[i] = make([]bool, len(senders))
	}
	done := func() bool {
		for _, row := range got {
			for _, ok := range row {
				if !ok {
					return false
				}
			}
		}
		return true
	}
	var lastErr error
	k := 0
	// One round: each sender sends, each member takes what came.
	round := func() {
		defer func() { k++ }()
		for s, l := range senders {
			ctx, cancel := context.WithTimeout(e.t.Context(), callTimeout)
			if err := l.GroupSend(ctx, g, e.seqMsg(10+s, k)); err != nil {
				lastErr = err
			}
			cancel()
		}
		for i, m := range members {
			for {
				ctx, cancel := context.WithTimeout(e.t.Context(), 100*time.Millisecond)
				msg, err := m.l.Receive(ctx, m.name)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					break
				}
				if err != nil {
					lastErr = err // Poll pauses before the next round
					break
				}
				if s, err := decodeSeq(msg); err == nil && s.Sender >= 10 && s.Sender < 10+len(senders) {
					got[i][s.Sender-10] = true
				}
			}
		}
	}
	err := testkit.Poll(recoverWithin, func() error {
		round()
		if !done() {
			return errors.New("not reached yet")
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("%v after the server came back, group sends still do not reach every member on both processes (member×sender reached: %v; last error: %v)", recoverWithin, got, lastErr)
	}
}

// drain receives until nothing more arrives for a while.
func (e *env) drain(m member) {
	e.t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		_, err := m.l.Receive(e.ctx(quiet), m.name)
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if err != nil && !errors.Is(err, channellayer.ErrOverflow) {
			e.t.Fatalf("Receive while draining: %v", err)
		}
	}
	e.t.Fatalf("channel %q kept receiving for %v", m.name, waitFor)
}
