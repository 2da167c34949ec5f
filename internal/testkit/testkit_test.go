package testkit_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// recorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as the real one does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder on a goroutine of its own and returns the
// message f failed with ("" if it did not fail).
func run(t *testing.T, f func(testing.TB)) string {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	msg := run(t, func(tb testing.TB) {
		testkit.Eventually(tb, 5*time.Second, func() bool { return n.Add(1) == 3 }, "third call")
	})
	if msg != "" || n.Load() != 3 {
		t.Fatalf("Eventually failed with %q after %d calls, want success on the third", msg, n.Load())
	}
	start := time.Now()
	msg = run(t, func(tb testing.TB) {
		testkit.Eventually(tb, 50*time.Millisecond, func() bool { return false }, "never true")
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("a condition never met failed after %v, want about 50ms", took)
	}
	if !strings.Contains(msg, "never true") || !strings.Contains(msg, "50ms") {
		t.Errorf("failure message %q does not say what and how long", msg)
	}
	msg = run(t, func(tb testing.TB) {
		testkit.EventuallyNil(tb, 20*time.Millisecond, func() error { return errors.New("still 2 left") }, "drain")
	})
	if !strings.Contains(msg, "drain") || !strings.Contains(msg, "still 2 left") {
		t.Errorf("failure message %q lacks the last error", msg)
	}
}

func TestWithinAndReceive(t *testing.T) {
	if msg := run(t, func(tb testing.TB) { testkit.Within(tb, 5*time.Second, "quick", func() {}) }); msg != "" {
		t.Errorf("Within failed a quick call: %q", msg)
	}
	release := make(chan struct{})
	msg := run(t, func(tb testing.TB) { testkit.Within(tb, 20*time.Millisecond, "stuck call", func() { <-release }) })
	close(release)
	if !strings.Contains(msg, "stuck call") {
		t.Errorf("Within on a stuck call failed with %q", msg)
	}
	ch := make(chan int, 1)
	ch <- 7
	var got int
	if msg := run(t, func(tb testing.TB) { got = testkit.Receive(tb, ch, time.Second, "seven") }); msg != "" || got != 7 {
		t.Errorf("Receive = %d, %q; want 7", got, msg)
	}
	if msg := run(t, func(tb testing.TB) { testkit.Receive(tb, ch, 10*time.Millisecond, "nothing sent") }); !strings.Contains(msg, "nothing sent") {
		t.Errorf("Receive on an empty channel failed with %q", msg)
	}
	close(ch)
	if msg := run(t, func(tb testing.TB) { testkit.Receive(tb, ch, time.Second, "closed") }); !strings.Contains(msg, "closed") {
		t.Errorf("Receive on a closed channel failed with %q", msg)
	}
}

func TestContext(t *testing.T) {
	var ctx context.Context
	t.Run("inner", func(t *testing.T) {
		ctx = testkit.Context(t)
		d, ok := ctx.Deadline()
		if !ok || time.Until(d) > testkit.DefaultTimeout {
			t.Fatalf("deadline %v, %v: want within %v", d, ok, testkit.DefaultTimeout)
		}
		if td, ok := t.Deadline(); ok && !d.Before(td) {
			t.Fatalf("context deadline %v is not before the test's %v", d, td)
		}
		if ctx.Err() != nil {
			t.Fatalf("a fresh context is already done: %v", ctx.Err())
		}
	})
	if ctx.Err() == nil {
		t.Fatal("the context outlived its test")
	}
	short := testkit.ContextWithin(t, 10*time.Millisecond)
	select {
	case <-short.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("ContextWithin(10ms) not done after 5s")
	}
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := testkit.NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(start); got != 90*time.Second {
		t.Fatalf("after Advance(90s) the clock moved %v", got)
	}
}

func TestWaitBlocked(t *testing.T) {
	ids := make(chan uint64, 1)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ids <- testkit.GoroutineID()
		<-release
	}()
	id := <-ids
	if msg := run(t, func(tb testing.TB) { testkit.WaitBlocked(tb, 5*time.Second, id, "waiting on release") }); msg != "" {
		t.Fatalf("WaitBlocked on a goroutine in a channel receive failed: %q", msg)
	}
	close(release)
	<-done
	if msg := run(t, func(tb testing.TB) { testkit.WaitBlocked(tb, 20*time.Millisecond, id, "ended") }); !strings.Contains(msg, "ended") {
		t.Errorf("WaitBlocked on an ended goroutine failed with %q", msg)
	}
	spin := make(chan struct{})
	go func() {
		ids <- testkit.GoroutineID()
		for {
			select {
			case <-spin:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	id = <-ids
	msg := run(t, func(tb testing.TB) { testkit.WaitBlocked(tb, 50*time.Millisecond, id, "spinning") })
	close(spin)
	if !strings.Contains(msg, "spinning") {
		t.Errorf("WaitBlocked on a busy goroutine failed with %q, want a failure", msg)
	}
	if err := testkit.Poll(10*time.Millisecond, func() error { return errors.New("no") }); err == nil {
		t.Error("Poll of a failing function returned nil")
	}
}

//go:noinline
func parkHere(release chan struct{}) { <-release }

func TestBlockedIn(t *testing.T) {
	const fn = "testkit_test.parkHere"
	if testkit.BlockedIn(fn) {
		t.Fatal("BlockedIn before any goroutine parked there")
	}
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		parkHere(release)
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return testkit.BlockedIn(fn) }, "a goroutine parked in parkHere")
	var found bool
	for _, g := range testkit.Goroutines() {
		if g.In(fn) {
			found = true
			if g.State != "chan receive" || g.LockWait() {
				t.Errorf("goroutine %d in parkHere: state %q, lock wait %v", g.ID, g.State, g.LockWait())
			}
		}
	}
	if !found {
		t.Error("Goroutines lists no goroutine in parkHere")
	}
	close(release)
	<-done
	if testkit.BlockedIn(fn) {
		t.Error("BlockedIn after the goroutine ended")
	}
}
