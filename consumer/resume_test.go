package consumer

import (
	"context"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
)

// A connection keeps no history after GroupAddSince, only its filter, and
// drops the filter once the group's live events are past what the join
// returned.
func TestResumeFilterIsDropped(t *testing.T) {
	ctx := context.Background()
	c, layer := resumeConn(t)
	var recs []channellayer.Message
	for i := range 3 {
		recs = append(recs, recordPost(t, layer, "feed", i))
	}
	rec, err := c.GroupAddSince(ctx, "feed", recs[0].ID, 10)
	if err != nil || !rec.Recovered || len(rec.Messages) != 2 {
		t.Fatalf("GroupAddSince: %d messages, recovered %v, %v; want the 2 after the first", len(rec.Messages), rec.Recovered, err)
	}
	if len(c.resumes) != 1 || c.resumes[0].filter.Messages != nil {
		t.Fatalf("after the join: %d filters (want 1), keeping %d messages (want none)", len(c.resumes), len(c.resumes[0].filter.Messages))
	}
	other := recs[2]
	other.Group = "elsewhere"
	if c.repeat(other) || len(c.resumes) != 1 {
		t.Fatalf("an event of another group was taken for a repeat, or dropped the filter (%d left)", len(c.resumes))
	}
	if !c.repeat(recs[2]) {
		t.Fatal("a repeat of the recovered messages was not filtered")
	}
	if len(c.resumes) != 1 {
		t.Fatal("the filter went before the stream passed the recovered messages")
	}
	fresh := recordPost(t, layer, "feed", 3)
	if c.repeat(fresh) {
		t.Fatal("a new message was taken for a repeat")
	}
	if c.resumes != nil {
		t.Fatalf("the filter is kept after the stream passed it: %+v", c.resumes)
	}
}

// TestResumeOfAnEmptyHistoryKeepsNoFilter: a join whose history read
// returned nothing cannot see a repeat, so the connection keeps no filter.
func TestResumeOfAnEmptyHistoryKeepsNoFilter(t *testing.T) {
	c, layer := resumeConn(t)
	rec, err := c.GroupAddSince(context.Background(), "quiet", "", 10)
	if err != nil || len(rec.Messages) != 0 || rec.Filters() {
		t.Fatalf("GroupAddSince on an empty history: %d messages, filters %v, %v", len(rec.Messages), rec.Filters(), err)
	}
	if c.resumes != nil {
		t.Fatalf("a filter is kept for a join that returned nothing: %+v", c.resumes)
	}
	first := recordPost(t, layer, "quiet", 1)
	if c.repeat(first) {
		t.Fatal("the group's first message was taken for a repeat")
	}
}

// resumeConn returns a bare connection (no transport, no runtime) with a
// channel on a memory layer, enough for GroupAddSince and repeat.
func resumeConn(t *testing.T) (*Conn, *channellayer.Memory) {
	t.Helper()
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { layer.Close(context.Background()) })
	ch, err := layer.NewChannel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &Conn{srv: &Server{layer: layer}, channel: ch}, layer
}

// recordPost records post number n in group and returns it as the group's
// live event would carry it.
func recordPost(t *testing.T, layer *channellayer.Memory, group string, n int) channellayer.Message {
	t.Helper()
	m, _ := channellayer.NewMessage("post", map[string]int{"n": n})
	r, err := layer.GroupSendRecorded(context.Background(), group, m)
	if err != nil {
		t.Fatal(err)
	}
	r.Group = group
	return r
}
