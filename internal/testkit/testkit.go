// Package testkit holds the helpers the project's tests share: bounded
// waiting for a condition (Eventually, Within, Receive), contexts tied to
// a test (Context, ContextWithin) and a clock a test moves by hand (Clock).
//
// A sleep is not an assertion: a test waits for the condition it expects,
// for a bounded time, and fails saying what did not happen. Sleeping is
// left to the few tests where real time passing is what is tested.
//
// The helpers call t.Fatalf, so they must run on the test's goroutine.
package testkit

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/clock"
)

// DefaultTimeout bounds a Context made without a duration.
const DefaultTimeout = 30 * time.Second

// deadlineMargin is kept between a Context's deadline and the test
// binary's, so that a hung call fails the test with its own message
// before the binary panics on -timeout.
const deadlineMargin = 5 * time.Second

// Eventually polls cond until it reports true, for at most within, and
// fails the test saying what did not happen if it never does.
func Eventually(t testing.TB, within time.Duration, cond func() bool, what string) {
	t.Helper()
	EventuallyNil(t, within, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}, what)
}

var errNotYet = fmt.Errorf("condition not met")

// EventuallyNil polls f until it returns nil, for at most within, and
// fails the test with what and the last error if it never does.
func EventuallyNil(t testing.TB, within time.Duration, f func() error, what string) {
	t.Helper()
	if err := Poll(within, f); err != nil {
		t.Fatalf("%s: not within %v: %v", what, within, err)
	}
}

// Poll calls f until it returns nil or within has passed, pausing a little
// longer each time (1 ms up to 50 ms), and returns f's last error: nil if
// f succeeded in time. It is EventuallyNil for a caller that reports the
// failure itself (with t.Errorf, say, to go on with the test).
func Poll(within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Within runs f and fails the test saying what did not finish if f has not
// returned after d. f keeps running in the background if it overstays; it
// should take a context (see ContextWithin) so that it ends with the test.
func Within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s: not done within %v", what, d)
	}
}

// Receive returns the next value from ch, failing the test saying what
// was awaited if none comes within d or ch is closed.
func Receive[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("%s: nothing within %v", what, d)
	}
	panic("unreachable")
}

// GoroutineID returns the id of the calling goroutine, for WaitBlocked.
func GoroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	// "goroutine 123 [running]:..."
	f := strings.Fields(string(b))
	if len(f) < 2 {
		panic("testkit: unexpected stack header " + string(b))
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		panic("testkit: unexpected stack header " + string(b))
	}
	return id
}

// WaitBlocked waits, for at most within, until goroutine id (from
// GoroutineID) is blocked waiting for an event: a channel operation, a
// select, a condition variable, network I/O or a sleep; waiting for a
// mutex does not count. It fails the test saying what was awaited if the
// goroutine never blocks or has ended.
//
// It replaces the sleep that would give a goroutine "time to start
// waiting" (for a message, say) before the test acts on it.
func WaitBlocked(t testing.TB, within time.Duration, id uint64, what string) {
	t.Helper()
	EventuallyNil(t, within, func() error {
		for _, g := range Goroutines() {
			if g.ID != id {
				continue
			}
			if !g.Blocked() {
				return fmt.Errorf("goroutine %d is %s", id, g.State)
			}
			return nil
		}
		return fmt.Errorf("goroutine %d has ended", id)
	}, what)
}

// Goroutine is one goroutine of a dump of all (see Goroutines).
type Goroutine struct {
	ID    uint64
	State string // as the runtime prints it: "select", "IO wait, 2 minutes", "running"
	Stack string // the dump's frames, innermost first
}

// Blocked reports whether g waits for an event: a channel operation, a
// select, a condition variable, network I/O or a sleep. Waiting for a
// mutex does not count (see LockWait).
func (g Goroutine) Blocked() bool {
	switch g.state() {
	case "running", "runnable", "syscall", "preempted":
		return false
	}
	return !g.LockWait()
}

// LockWait reports whether g waits for a mutex.
func (g Goroutine) LockWait() bool {
	switch g.state() {
	case "sync.Mutex.Lock", "sync.RWMutex.Lock", "sync.RWMutex.RLock", "semacquire":
		return true
	}
	return false
}

// state is State without its qualifiers (", 2 minutes").
func (g Goroutine) state() string {
	s, _, _ := strings.Cut(g.State, ",")
	return s
}

// In reports whether function (as the dump names it:
// "chat.(*inflight).waitBelow") is on g's stack.
func (g Goroutine) In(function string) bool {
	return strings.Contains(g.Stack, function+"(")
}

// Goroutines returns every goroutine of the program, from runtime.Stack.
func Goroutines() []Goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []Goroutine
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		// "goroutine 123 [select]:\n..."
		rest, ok := strings.CutPrefix(g, "goroutine ")
		if !ok {
			continue
		}
		idText, rest, _ := strings.Cut(rest, " [")
		state, stack, _ := strings.Cut(rest, "]:\n")
		id, err := strconv.ParseUint(idText, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Goroutine{ID: id, State: state, Stack: stack})
	}
	return out
}

// BlockedIn reports whether a goroutine with function on its stack is
// blocked waiting for an event (see Goroutine.Blocked); poll it with
// Eventually to wait until a call has come to wait.
func BlockedIn(function string) bool {
	for _, g := range Goroutines() {
		if g.In(function) && g.Blocked() {
			return true
		}
	}
	return false
}

// Context returns a context for the test's blocking calls: it ends after
// DefaultTimeout, a little before the test binary's own deadline
// (go test -timeout) if that comes first, and when the test's cleanup runs.
func Context(t testing.TB) context.Context {
	t.Helper()
	return ContextWithin(t, DefaultTimeout)
}

// ContextWithin is Context ending after d (or before the test binary's
// deadline, if that comes first).
func ContextWithin(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	deadline := time.Now().Add(d)
	if td, ok := testDeadline(t); ok && td.Add(-deadlineMargin).Before(deadline) {
		deadline = td.Add(-deadlineMargin)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// testDeadline is t.Deadline for the types that have one (*testing.T;
// *testing.B and *testing.F do not).
func testDeadline(t testing.TB) (time.Time, bool) {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		return d.Deadline()
	}
	return time.Time{}, false
}

// Clock is a clock.Clock that moves only when the test moves it. The zero
// value is not usable; make one with NewClock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

var _ clock.Clock = (*Clock)(nil)

// NewClock returns a Clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
