package dispatch

import (
	"testing"
	"time"
)

func TestPace(t *testing.T) {
	const ms = int64(time.Millisecond)
	c := &Dispatcher{cfg: &Config{coalesce: 10 * time.Millisecond}}
	steps := []struct {
		at   int64
		wait time.Duration
	}{
		{1000 * ms, 0},                     // alone
		{1020 * ms, 0},                     // alone: 20 ms after
		{1025 * ms, 0},                     // 5 ms after: one close call is no burst
		{1030 * ms, 5 * time.Millisecond},  // the second in a row: waits for 1025+10
		{1041 * ms, 4 * time.Millisecond},  // in the burst: 1035+10
		{1045 * ms, 10 * time.Millisecond}, // just after the batch due at 1045: at 1055
		{1100 * ms, 0},                     // a pause ends the burst
		{1105 * ms, 0},
	}
	for i, s := range steps {
		if got := c.pace(s.at); got != s.wait {
			t.Fatalf("step %d at %d ms: wait %v, want %v", i, s.at/ms, got, s.wait)
		}
	}
	off := &Dispatcher{cfg: &Config{coalesce: -1}}
	for i := int64(0); i < 5; i++ {
		if got := off.pace(1000*ms + i); got != 0 {
			t.Fatalf("disabled: wait %v", got)
		}
	}
}
