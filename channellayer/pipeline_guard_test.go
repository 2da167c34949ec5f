package channellayer

import (
	"strconv"
	"testing"
	"time"
)

// TestPipelineTripGuard checks when a pipeline offers another round trip
// (free) and which records may take it (passes, passesOthers): only beside
// round trips that carry nothing but records, of other groups, and never
// behind more than pipeScan calls under way or queued, so that a stalled
// Redis does not make each new record scan every queued one.
func TestPipelineTripGuard(t *testing.T) {
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

	// A third beside two, while the calls under way stay within pipeScan.
	first.calls = records(pipeScan/2, "a")
	p.queue = nil
	p.trips[1] = trip{busy: true, only: true, calls: records(pipeScan/2, "b")}
	if got := p.free(); got != 2 {
		t.Errorf("two round trips of %d records each: free() = %d, want 2", pipeScan/2, got)
	}
	if p.passesOthers(record("b0"), 2) || p.passesOthers(record("a0"), 2) {
		t.Error("a record of a group under way on any round trip must wait")
	}
	if !p.passesOthers(record("c"), 2) {
		t.Error("a record of a group under way on none should pass")
	}
	if !p.passesOthers(record("b0"), 1) {
		t.Error("a round trip's own group does not hold back its next batch")
	}
	p.trips[1].calls = records(pipeScan/2+1, "b")
	if got := p.free(); got != -1 {
		t.Errorf("%d calls under way: free() = %d, want -1", pipeScan+1, got)
	}
	p.trips[1].calls = records(pipeScan/2, "b")
	p.trips[1].only = false
	if got := p.free(); got != -1 {
		t.Errorf("the second round trip carries a waited command: free() = %d, want -1", got)
	}
	p.trips[1].only = true

	for i := range p.trips {
		p.trips[i] = trip{busy: true, only: true, calls: records(1, "t"+strconv.Itoa(i)+"-")}
	}
	if got := p.free(); got != -1 {
		t.Errorf("every round trip under way: free() = %d, want -1", got)
	}
}
