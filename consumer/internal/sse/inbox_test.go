package sse

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

func frames(ss ...string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

// POSTs are applied in the order of their seq, whatever order they came
// in; repeats are ignored; too far ahead or too big is refused with 429;
// after the end, 404.
func TestInboxOrder(t *testing.T) {
	in := newInbox(100)
	steps := []struct {
		name   string
		seq    uint64
		frames [][]byte
		want   int
	}{
		{"second before first: kept", 2, frames("c"), http.StatusNoContent},
		{"first: applied, then the second", 1, frames("a", "b"), http.StatusNoContent},
		{"a repeat of the first: ignored", 1, frames("a", "b"), http.StatusNoContent},
		{"too far ahead", 3 + maxEarly, frames("x"), http.StatusTooManyRequests},
		{"too many bytes waiting", 3, [][]byte{make([]byte, 100)}, http.StatusTooManyRequests},
		{"third", 3, frames("d"), http.StatusNoContent},
	}
	for _, s := range steps {
		if got := in.deliver(s.seq, s.frames); got != s.want {
			t.Fatalf("%s: status %d, want %d", s.name, got, s.want)
		}
	}
	ctx := context.Background()
	for _, want := range []string{"a", "b", "c", "d"} {
		f, err := in.read(ctx, nil, nil)
		if err != nil || string(f) != want {
			t.Fatalf("read %q, %v; want %q", f, err, want)
		}
	}
	end := errors.New("the client closed")
	if !in.finish(end) || in.finish(errors.New("later")) {
		t.Fatal("finish: the first call must win, alone")
	}
	if _, err := in.read(ctx, nil, nil); err != end {
		t.Fatalf("read after finish: %v, want the end", err)
	}
	if got := in.deliver(4, frames("e")); got != http.StatusNotFound {
		t.Fatalf("POST after the end: %d, want 404", got)
	}
}

// A read waits until frames come, or the stream is gone.
func TestInboxReadWaits(t *testing.T) {
	in := newInbox(100)
	got := make(chan string, 1)
	go func() {
		f, _ := in.read(context.Background(), nil, nil)
		got <- string(f)
	}()
	in.deliver(1, frames("late"))
	if f := <-got; f != "late" {
		t.Fatalf("read %q, want %q", f, "late")
	}
	gone := make(chan struct{})
	close(gone)
	if _, err := in.read(context.Background(), gone, nil); !errors.Is(err, errGone) {
		t.Fatalf("read on a gone stream: %v, want errGone", err)
	}
}
