package layertest

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/chatterpro/chatterpro/channellayer"
)

// keyed returns the IdempotentRecorder of the layer and of its peer, or
// false (and logs why) if the backend does not implement it.
func (e *env) keyed() (ka, kb channellayer.IdempotentRecorder, ok bool) {
	e.t.Helper()
	ka, ok = e.a.(channellayer.IdempotentRecorder)
	if !ok {
		e.t.Logf("%T does not implement channellayer.IdempotentRecorder: rule does not apply", e.a)
		return nil, nil, false
	}
	if _, ok := e.a.(channellayer.History); !ok {
		e.t.Fatalf("%T implements channellayer.IdempotentRecorder but not channellayer.History", e.a)
	}
	kb, ok = e.peer().(channellayer.IdempotentRecorder)
	if !ok {
		e.t.Fatalf("Layer implements channellayer.IdempotentRecorder, its peer %T does not", e.peer())
	}
	return ka, kb, true
}

// recordOnce calls GroupSendRecordedOnce and checks again.
func (e *env) recordOnce(k channellayer.IdempotentRecorder, group, key string, m channellayer.Message, wantAgain bool) channellayer.Message {
	e.t.Helper()
	rec, again, err := k.GroupSendRecordedOnce(e.ctx(waitFor), group, key, m)
	if err != nil {
		e.t.Fatalf("GroupSendRecordedOnce(%q, %q): %v", group, key, err)
	}
	if again != wantAgain {
		e.t.Fatalf("GroupSendRecordedOnce(%q, %q) of %s: again = %v, want %v", group, key, m.Body, again, wantAgain)
	}
	if !channellayer.ValidID(rec.ID) || !strings.HasPrefix(string(rec.Body), `{"id":"`+rec.ID+`"`) {
		e.t.Fatalf("GroupSendRecordedOnce returned ID %q with body %s", rec.ID, rec.Body)
	}
	return rec
}

// checkHistoryRecordOnce: a message recorded with a key is recorded and
// delivered once, whichever process sends it again and however many send
// it at once; a repeat gets the original back; a key is remembered while
// the history keeps its message, and no longer.
func checkHistoryRecordOnce(e *env) {
	ka, kb, ok := e.keyed()
	if !ok {
		return
	}
	ha := e.a.(channellayer.History)
	g := e.name("room")
	ma, mb := e.member(e.a), e.member(e.peer())
	e.join(ma.l, g, ma.name)
	e.join(mb.l, g, mb.name)

	first := e.recordOnce(ka, g, "k1", e.seqMsg(0, 1), false)
	// The same key again, from the other process, with another body: the
	// original comes back, nothing is recorded or sent.
	again := e.recordOnce(kb, g, "k1", e.seqMsg(0, 2), true)
	if again.ID != first.ID || again.Type != first.Type || string(again.Body) != string(first.Body) {
		e.t.Errorf("repeat returned %s (%q), want the original %s", again.Body, again.Type, first.Body)
	}
	other := e.recordOnce(kb, g, "k2", e.seqMsg(0, 3), false)
	plain := e.record(ha, g, 0, 4) // an unkeyed record between keyed ones
	e.recordOnce(ka, g, "k2", e.seqMsg(0, 5), true)
	for _, m := range []member{ma, mb} {
		for _, want := range []channellayer.Message{first, other, plain} {
			if got := e.recv(m.l, m.name); got.ID != want.ID || string(got.Body) != string(want.Body) {
				e.t.Fatalf("member received %s, want %s (a repeat must not be sent)", got.Body, want.Body)
			}
		}
		e.silent(m.l, m.name, "member after the keyed records")
	}
	e.recent(ha, g, 10, []channellayer.Message{first, other, plain})

	// Racing senders on both processes: one records, all get its message.
	const racers = 8
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		fresh  int
		idsSet = make(map[string]bool)
		errs   []string
	)
	for i := range racers {
		k := []channellayer.IdempotentRecorder{ka, kb}[i%2]
		wg.Go(func() {
			rec, again, err := k.GroupSendRecordedOnce(e.ctx(waitFor), g, "race", e.seqMsg(i, 0))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			if !again {
				fresh++
			}
			idsSet[rec.ID] = true
		})
	}
	wg.Wait()
	if len(errs) > 0 || fresh != 1 || len(idsSet) != 1 {
		e.t.Fatalf("%d concurrent records of one key: %d recorded, %d distinct IDs, errors %v; want 1 and 1", racers, fresh, len(idsSet), errs)
	}
	for _, m := range []member{ma, mb} {
		e.recv(m.l, m.name)
		e.silent(m.l, m.name, "member after racing records of one key")
	}

	if _, _, err := ka.GroupSendRecordedOnce(e.ctx(waitFor), g, "", e.seqMsg(0, 9)); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("GroupSendRecordedOnce with an empty key: %v, want %v", err, channellayer.ErrInvalid)
	}
}

// checkHistoryRecordOnceTrim: a key is remembered while the history keeps
// its message, however many keyed records came since, and forgotten once
// it is trimmed: the same key records again.
func checkHistoryRecordOnceTrim(e *env) {
	ka, kb, ok := e.keyed()
	if !ok {
		return
	}
	g := e.name("room")
	size := e.s.HistorySize
	key := func(i int) string { return fmt.Sprintf("key-%d", i) }
	n := 3*size + 2 // past the point where forgotten keys are dropped
	for i := range n {
		e.recordOnce([]channellayer.IdempotentRecorder{ka, kb}[i%2], g, key(i), e.seqMsg(0, i), false)
	}
	for i := n - size; i < n; i++ { // kept: repeats
		e.recordOnce(kb, g, key(i), e.seqMsg(1, i), true)
	}
	for _, i := range []int{0, n - size - 1} { // trimmed: recorded again
		e.recordOnce(ka, g, key(i), e.seqMsg(2, i), false)
	}
}
