package dispatch

import (
	"slices"
	"testing"
	"time"
)

const (
	ms = int64(time.Millisecond)
	us = int64(time.Microsecond)
)

// senders merges the arrival times of senders that each send every period
// from its phase on (ms into the period), until end.
func senders(period, end int64, phases ...int64) []int64 {
	var out []int64
	for _, ph := range phases {
		for at := 1000*ms + ph; at < 1000*ms+end; at += period {
			out = append(out, at)
		}
	}
	slices.Sort(out)
	return out
}

// simulate drives pace as the layer and the dispatcher would: an event that
// comes while a dispatcher is due joins it, and the PaceCap-th of them
// starts it at once (Kick's hurry); one that finds none kicks from 0. It
// returns the number of batches (writes) and how long each event waited.
func simulate(coalesce time.Duration, arrivals []int64) (batches int, waits []time.Duration) {
	d := &Dispatcher{cfg: &Config{coalesce: coalesce}}
	waits = make([]time.Duration, len(arrivals))
	due := int64(-1)  // when the waiting dispatcher runs; -1: none waits
	var waiting []int // indexes into arrivals
	run := func(at int64) {
		d.started(at)
		d.took = int32(len(waiting))
		batches++
		for _, i := range waiting {
			waits[i] = time.Duration(at - arrivals[i])
		}
		waiting, due = waiting[:0], -1
	}
	for i, a := range arrivals {
		if due >= 0 && a >= due {
			run(due)
		}
		waiting = append(waiting, i)
		if due >= 0 {
			if len(waiting) == PaceCap {
				run(a) // hurried
			}
			continue
		}
		if wait := d.pace(a); wait > 0 {
			due = a + int64(wait)
		} else {
			run(a)
		}
	}
	if due >= 0 {
		run(due)
	}
	return batches, waits
}

func TestPaceOnlyWhatComesFast(t *testing.T) {
	const w = 10 * time.Millisecond
	cases := []struct {
		name     string
		arrivals []int64
		paced    bool
	}{
		{"one sender, 50 a second", senders(20*ms, 2000*ms, 0), false},
		// Four senders of 26 a second: 105 events a second, irregular
		// gaps of 5 to 18 ms. A window would gather about one event.
		{"four senders, 105 a second", senders(38*ms, 2000*ms, 0, 5*ms, 23*ms, 30*ms), false},
		{"four senders, 200 a second", senders(20*ms, 2000*ms, 0, 4*ms, 9*ms, 15*ms), false},
		// Four of 100 a second: 400 a second, gaps of 1 to 4 ms.
		{"four senders, 400 a second", senders(10*ms, 2000*ms, 0, 1*ms, 5*ms, 8*ms), true},
		{"one sender, 500 a second", senders(2*ms, 2000*ms, 0), true},
	}
	for _, c := range cases {
		batches, waits := simulate(w, c.arrivals)
		n, longest := len(c.arrivals), slices.Max(waits)
		if !c.paced {
			if longest != 0 || batches != n {
				t.Errorf("%s: %d events in %d batches, one waited %v; want each at once", c.name, n, batches, longest)
			}
			continue
		}
		// Irregular senders near paceFlood's rate may make a batch a flood.
		if batches > n/3 || longest > floodWindows*w {
			t.Errorf("%s: %d events in %d batches, longest wait %v; want at most %d batches, none waiting over %v", c.name, n, batches, longest, n/3, floodWindows*w)
		}
	}
}

// When fast events stop, the slower ones after the pause go at once.
func TestPaceEndsWithThePause(t *testing.T) {
	const w = 10 * time.Millisecond
	fast := senders(2*ms, 200*ms, 0)
	arrivals := append(fast, 1300*ms, 1320*ms, 1340*ms, 1360*ms)
	_, waits := simulate(w, arrivals)
	if slices.Max(waits[:len(fast)]) == 0 {
		t.Fatal("the fast events were not paced")
	}
	for i, wait := range waits[len(fast):] {
		if wait != 0 {
			t.Fatalf("event %d after the pause waited %v", i, wait)
		}
	}
	if _, waits := simulate(-1, fast); slices.Max(waits) != 0 {
		t.Fatal("pacing disabled, yet an event waited")
	}
}

// Paced events are written one window apart, 2.5 windows over paceBusy
// events to a window, and floodWindows for a flood (more than paceFlood):
// no event waits longer than that, and a flood makes a fifth of the writes
// of one window. The floods here gather fewer than PaceCap events in
// floodWindows windows (a faster one is written every PaceCap events:
// TestPaceHurriedFloodKeepsItsWindows).
func TestPaceWindowsByRate(t *testing.T) {
	const w = 10 * time.Millisecond
	for _, c := range []struct {
		name     string
		arrivals []int64
		span     time.Duration // between writes
	}{
		{"four senders, 300 a second", senders(13*ms, 2000*ms, 0, 3*ms, 7*ms, 10*ms), w},
		{"four senders, 400 a second", senders(10*ms, 2000*ms, 0, 2500*us, 5*ms, 7500*us), 5 * w / 2},
		{"one sender, 450 a second", senders(2222*us, 2000*ms, 0), 5 * w / 2},
		{"four senders, 571 a second", senders(7*ms, 2000*ms, 0, 2*ms, 4*ms, 5*ms), floodWindows * w},
		{"one sender, 556 a second", senders(1800*us, 2000*ms, 0), floodWindows * w},
	} {
		batches, waits := simulate(w, c.arrivals)
		longest := slices.Max(waits)
		// Over 2 s, writes span apart make about 2 s / span batches.
		want := int(2000 * ms / int64(c.span))
		if batches > want+want/8 || batches < want-want/5 || longest > c.span || longest <= c.span-w {
			t.Errorf("%s: %d batches, longest wait %v; want about %d batches %v apart (waits up to %v)", c.name, batches, longest, want, c.span, c.span)
		}
	}
}

// A flood that fills PaceCap before its windows pass is written every
// PaceCap events, and the next window counts from that write: no event
// waits longer than floodWindows windows, however long the flood lasts.
// (When the next window counted from the due time the hurried batch never
// waited for, it moved further ahead with every batch: at 3 000 events a
// second for 3 s, 4 ms windows, the last events waited over 2 s.)
func TestPaceHurriedFloodKeepsItsWindows(t *testing.T) {
	const w = 4 * time.Millisecond
	arrivals := senders(1333*us, 3000*ms, 0, 333*us, 667*us, 1000*us)
	batches, waits := simulate(w, arrivals)
	n, longest := len(arrivals), slices.Max(waits)
	if longest > floodWindows*w {
		t.Errorf("%d events in 3 s: longest wait %v; want at most %v (floodWindows windows)", n, longest, floodWindows*w)
	}
	if want := n / PaceCap; batches < want {
		t.Errorf("%d events in %d batches; want at least %d (a batch every PaceCap events)", n, batches, want)
	}
	if batches > n/(PaceCap/2) {
		t.Errorf("%d events in %d batches; want about one every PaceCap (%d) events", n, batches, PaceCap)
	}
}
