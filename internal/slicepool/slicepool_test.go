package slicepool_test

import (
	"testing"

	"github.com/chatterpro/chatterpro/internal/slicepool"
)

func TestAppendMovesThroughTheSizes(t *testing.T) {
	p := slicepool.New[int](2, 4)
	var s []int
	var caps []int
	for i := range 6 {
		s = p.Append(s, i)
		caps = append(caps, cap(s))
	}
	for i, v := range s {
		if v != i {
			t.Fatalf("s[%d] = %d, want %d (s = %v)", i, v, i, s)
		}
	}
	want := []int{2, 2, 4, 4}
	for i, c := range want {
		if caps[i] != c {
			t.Fatalf("capacities %v, want %v first", caps, want)
		}
	}
	if caps[4] <= 4 {
		t.Fatalf("past Max the slice must grow by append, capacities %v", caps)
	}
}

func TestGetPut(t *testing.T) {
	p := slicepool.New[*int](8, 64)
	for _, tc := range []struct{ n, cap int }{{1, 8}, {8, 8}, {9, 64}, {64, 64}} {
		s := p.Get(tc.n)
		if len(s) != 0 || cap(s) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want 0 and %d", tc.n, len(s), cap(s), tc.cap)
		}
		x := 1
		s = append(s, &x)
		p.Put(s)
	}
	p.Put(nil)             // ignored
	p.Put(make([]*int, 3)) // not from the pool: ignored
	if s := p.Get(1); cap(s) != 8 || len(s[:8]) != 8 || s[:1][0] != nil {
		t.Errorf("a slice back from the pool must come cleared: %v", s[:1])
	}
}
