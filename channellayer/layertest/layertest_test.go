package layertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/channellayer/layertest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// Deliberately broken backends: the Memory layer behind a decorator that
// breaks one rule.

// duplicating delivers every group message twice.
type duplicating struct{ *channellayer.Memory }

func (d *duplicating) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	if err := d.Memory.GroupSend(ctx, group, m); err != nil {
		return err
	}
	return d.Memory.GroupSend(ctx, group, m)
}

// reordering holds each group message back until the next one to the same
// group, then delivers the pair swapped (a lone message goes out after 20 ms).
type reordering struct {
	*channellayer.Memory
	mu   sync.Mutex
	held map[string]*heldMsg
}

type heldMsg struct {
	m     channellayer.Message
	timer *time.Timer
}

func (r *reordering) GroupSend(ctx context.Context, group string, m channellayer.Message) error {
	if m.Type == "" {
		return r.Memory.GroupSend(ctx, group, m) // let it refuse
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.held[group]; h != nil && h.timer.Stop() {
		delete(r.held, group)
		if err := r.Memory.GroupSend(ctx, group, m); err != nil {
			return err
		}
		return r.Memory.GroupSend(ctx, group, h.m)
	}
	h := &heldMsg{m: m}
	h.timer = time.AfterFunc(20*time.Millisecond, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.held[group] == h {
			delete(r.held, group)
			_ = r.Memory.GroupSend(context.Background(), group, h.m)
		}
	})
	r.held[group] = h
	return nil
}

// unbounded hides ErrChannelFull from senders: the message is lost silently.
type unbounded struct{ *channellayer.Memory }

func (u *unbounded) Send(ctx context.Context, channel string, m channellayer.Message) error {
	if err := u.Memory.Send(ctx, channel, m); !errors.Is(err, channellayer.ErrChannelFull) {
		return err
	}
	return nil
}

// sweepingLister's ListAll also removes the expired entries it meets:
// listing must leave them for the sweep, which hands each out once.
type sweepingLister struct{ *channellayer.Memory }

func (s *sweepingLister) ListAll(ctx context.Context, groups []string) (map[string][]channellayer.Member, error) {
	if _, err := s.Memory.ExpireAll(ctx, groups); err != nil {
		return nil, err
	}
	return s.Memory.ListAll(ctx, groups)
}

// blindSweeper's SweepAll never tells when a group's next entry expires:
// a tracker trusting it would sweep a dead process's entries late.
type blindSweeper struct{ *channellayer.Memory }

func (b *blindSweeper) SweepAll(ctx context.Context, groups []string) (map[string]channellayer.Swept, error) {
	out, err := b.Memory.SweepAll(ctx, groups)
	for g, s := range out {
		out[g] = channellayer.Swept{Expired: s.Expired}
	}
	return out, err
}

// broken builds the layer of each kind; "none" is the correct Memory.
var broken = map[string]func(m *channellayer.Memory) channellayer.Layer{
	"none":        func(m *channellayer.Memory) channellayer.Layer { return m },
	"duplicating": func(m *channellayer.Memory) channellayer.Layer { return &duplicating{m} },
	"reordering": func(m *channellayer.Memory) channellayer.Layer {
		return &reordering{Memory: m, held: make(map[string]*heldMsg)}
	},
	"unbounded":      func(m *channellayer.Memory) channellayer.Layer { return &unbounded{m} },
	"sweepingLister": func(m *channellayer.Memory) channellayer.Layer { return &sweepingLister{m} },
	"blindSweeper":   func(m *channellayer.Memory) channellayer.Layer { return &blindSweeper{m} },
}

const brokenEnv = "LAYERTEST_BROKEN"

// TestBrokenBackend runs the suite on the backend named by $LAYERTEST_BROKEN.
// It is run by TestSuiteCatchesBrokenBackends in a child process, whose
// failure is the expected outcome; run directly it runs the suite on the
// correct Memory ("none"), which must pass.
func TestBrokenBackend(t *testing.T) {
	kind := os.Getenv(brokenEnv)
	if kind == "" {
		kind = "none"
	}
	wrap, ok := broken[kind]
	if !ok {
		t.Fatalf("unknown %s=%q", brokenEnv, kind)
	}
	layertest.Run(t, func(t *testing.T) layertest.Setup {
		opts := channellayer.MemoryOptions{Capacity: 16, Expiry: 400 * time.Millisecond, HistorySize: 16}
		m, err := channellayer.NewMemory(opts)
		if err != nil {
			t.Fatal(err)
		}
		return layertest.Setup{Layer: wrap(m), Capacity: opts.Capacity, Expiry: opts.Expiry, HistorySize: opts.HistorySize}
	})
}

// TestSuiteCatchesBrokenBackends runs the suite on each broken backend in a
// child process and checks that it fails, on the rules the breakage
// violates. The correct Memory, run the same way, passes.
func TestSuiteCatchesBrokenBackends(t *testing.T) {
	tests := []struct {
		kind     string
		wantFail []string // rules that must fail; none: the run must pass
	}{
		{"none", nil},
		{"duplicating", []string{"GroupSend", "GroupDiscard", "Order", "OrderConcurrent"}},
		{"reordering", []string{"Order"}},
		{"unbounded", []string{"Capacity"}},
		{"sweepingLister", []string{"PresenceListAll"}},
		{"blindSweeper", []string{"PresenceSweepAll"}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBrokenBackend$", "-test.count=1", "-test.timeout=80s")
			cmd.Env = append(os.Environ(), brokenEnv+"="+tt.kind)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("the suite did not finish within 90s:\n%s", out)
			}
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("running the suite: %v", err)
			}
			if len(tt.wantFail) == 0 {
				if err != nil {
					t.Fatalf("the suite failed on the correct Memory layer: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("the suite passed on the %s backend, want it to fail:\n%s", tt.kind, out)
			}
			for _, rule := range tt.wantFail {
				if !strings.Contains(string(out), "--- FAIL: TestBrokenBackend/"+rule+" ") {
					t.Errorf("the suite did not fail rule %s on the %s backend:\n%s", rule, tt.kind, out)
				}
			}
			if t.Failed() {
				return
			}
			t.Logf("failures on the %s backend, as wanted:\n%s", tt.kind, failLines(string(out)))
		})
	}
}

// failLines returns the failure report of go test output: the indented
// lines under "--- FAIL".
func failLines(out string) string {
	var lines []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(strings.TrimSpace(l), "--- FAIL") || strings.HasPrefix(l, "    ") {
			lines = append(lines, strings.TrimRight(l, "\n"))
		}
	}
	return strings.Join(lines, "\n")
}
