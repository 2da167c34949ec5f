package channellayer

import (
	"strconv"
	"testing"
	"time"
)

// TestPipelineSecondTripGuard checks when a pipeline offers its second
// round trip (free) and which records may take it (passes): only beside a
// round trip that carries nothing but records, of other groups, and
// never behind more than pipeScan calls in it or in the queue, so that a
// stalled Redis does not make each new record scan every queued one.
func TestPipelineSecondTripGuard(t *testing.T) {
	records := func(n int, prefix string) []*pipeCall {
		calls := make([]*pipeCall, n)
		for i := range calls {
			calls[i] = &pipeCall{batch: &recordBatch{group: prefix + strconv.Itoa(i)}}
		}
		return calls
	}
	record := func(group string) *pipeCall { return &pipeCall{batch: &recordBatch{group: group}} }

	p := &pipeline{}
	if got := p.free(); got != 0 {
		t.Fatalf("idle pipeline: free() = %d, want 0", got)
	}
	first := &p.trips[0]
	*first = trip{busy: true, only: true, calls: records(pipeScan, "a")}
	if got := p.free(); got != 1 {
		t.Fatalf("first round trip carries %d records: free() = %d, want 1", pipeScan, got)
	}
	if !record("b").passes(first) {
		t.Error("a record of a group not under way should pass")
	}
	if record("a0").passes(first) {
		t.Error("a record of a group under way must wait")
	}
	if (&pipeCall{done: make(chan struct{})}).passes(first) {
		t.Error("a waited command must wait")
	}

	first.calls = records(pipeScan+1, "a")
	if got := p.free(); got != -1 {
		t.Errorf("first round trip carries %d records: free() = %d, want -1", pipeScan+1, got)
	}
	if record("b").passes(first) {
		t.Errorf("a record must not scan a round trip of %d calls", pipeScan+1)
	}

	first.calls = records(pipeScan, "a")
	p.queue = records(pipeScan+1, "q")
	if got := p.free(); got != -1 {
		t.Errorf("%d calls queued: free() = %d, want -1", pipeScan+1, got)
	}
	p.queue = p.queue[:pipeScan]
	if got := p.free(); got != 1 {
		t.Errorf("%d calls queued: free() = %d, want 1", pipeScan, got)
	}

	first.only = false
	if got := p.free(); got != -1 {
		t.Errorf("first round trip carries a waited command: free() = %d, want -1", got)
	}
	if record("b").passes(first) {
		t.Error("nothing may pass a round trip that carries a waited command")
	}
	first.only = true

	p.linger = time.Millisecond
	if got := p.free(); got != -1 {
		t.Errorf("with a linger: free() = %d, want -1", got)
	}
	p.linger, p.replicas = 0, 1
	if got := p.free(); got != -1 {
		t.Errorf("with replicas: free() = %d, want -1", got)
	}
	p.replicas = 0

	p.trips[1].busy = true
	if got := p.free(); got != -1 {
		t.Errorf("both round trips under way: free() = %d, want -1", got)
	}
}
