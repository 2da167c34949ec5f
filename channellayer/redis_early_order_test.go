package channellayer_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// Records reach the recording process's members from the script's answer
// when they follow the last record delivered there; with plain sends and
// another process's records in between, every member still gets each
// message once, one sender's in the order sent, the records in ID order.
func TestRedisRecordsEarly(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	opts := channellayer.RedisOptions{Capacity: 1000} // everything below waits in the channels
	a, b := newRedisLayer(t, srv.Addr(), prefix, opts), newRedisLayer(t, srv.Addr(), prefix, opts)
	const g = "room"
	chA, chB := newChan(t, a, g), newChan(t, b, g)

	// One record at a time, each received before the next: every record
	// after the first follows the last one delivered, and goes early unless
	// the pub/sub reader was quicker.
	const waited = 20
	for i := range waited {
		if _, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": i})); err != nil {
			t.Fatal(err)
		}
		for _, ch := range []struct {
			l  channellayer.Layer
			ch string
		}{{a, chA}, {b, chB}} {
			if n := seqOf(t, recv(t, ch.l, ch.ch)); n != i {
				t.Fatalf("got record %d, want %d", n, i)
			}
		}
	}
	if got := a.EarlyRecords(); got == 0 || got > waited-1 {
		t.Errorf("%d records delivered early, want 1 to %d", got, waited-1)
	}
	if got := b.EarlyRecords(); got != 0 {
		t.Errorf("the other process delivered %d records early, want 0", got)
	}

	// A's plain sends and unwaited records interleaved, B recording beside.
	const rounds = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds+rounds/4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range rounds / 4 {
			if _, err := b.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "b", map[string]int{"n": i})); err != nil {
				errs <- err
			}
		}
	}()
	for i := range rounds {
		if err := a.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "plain", map[string]int{"n": 2 * i})); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		a.GroupSendRecordedAsync(g, mustMsg(t, "rec", map[string]int{"n": 2*i + 1}), func(_ channellayer.Message, err error) {
			if err != nil {
				errs <- err
			}
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, ch := range []struct {
		name string
		l    channellayer.Layer
		ch   string
	}{{"a", a, chA}, {"b", b, chB}} {
		nextA, nextB, lastID := 0, 0, ""
		for nextA < 2*rounds || nextB < rounds/4 {
			m := recv(t, ch.l, ch.ch)
			n := seqOf(t, m)
			switch m.Type {
			case "plain", "rec":
				if n != nextA {
					t.Fatalf("member on %s: A's message %d (%s), want %d", ch.name, n, m.Type, nextA)
				}
				nextA++
			case "b":
				if n != nextB {
					t.Fatalf("member on %s: B's record %d, want %d", ch.name, n, nextB)
				}
				nextB++
			}
			if m.ID != "" {
				if lastID != "" && !idBefore(t, lastID, m.ID) {
					t.Fatalf("member on %s: record %s after %s", ch.name, m.ID, lastID)
				}
				lastID = m.ID
			}
		}
		silent(t, ch.l, ch.ch)
	}
	t.Logf("records delivered early: %d of %d on the recording process", a.EarlyRecords(), waited+rounds)
}

// idBefore reports whether history ID x comes before y.
func idBefore(t *testing.T, x, y string) bool {
	t.Helper()
	var xm, xs, ym, ys uint64
	if _, err := fmt.Sscanf(x+" "+y, "%d-%d %d-%d", &xm, &xs, &ym, &ys); err != nil {
		t.Fatalf("IDs %q, %q: %v", x, y, err)
	}
	return xm < ym || xm == ym && xs < ys
}
