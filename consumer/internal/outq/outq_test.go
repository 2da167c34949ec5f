package outq_test

import (
	"errors"
	"testing"

	"github.com/chatterpro/chatterpro/consumer/internal/outq"
)

func TestWriterRole(t *testing.T) {
	q := outq.New(10)
	if w, err := q.Push([]byte("ab")); w || err != nil {
		t.Fatalf("push before Start: writer %v, %v; want no writer", w, err)
	}
	if !q.Start() {
		t.Fatal("Start with a frame waiting: no writer")
	}
	if w, _ := q.Push([]byte("cd")); w {
		t.Fatal("push while a writer works made a second writer")
	}
	frames := q.Take()
	if len(frames) != 2 || string(frames[0]) != "ab" || string(frames[1]) != "cd" {
		t.Fatalf("Take: %q", frames)
	}
	q.Written(frames)
	if q.Take() != nil {
		t.Fatal("Take on an empty queue: frames")
	}
	if w, _ := q.Push([]byte("ef")); !w {
		t.Fatal("push after the writer stopped: no writer")
	}
}

func TestLimit(t *testing.T) {
	q := outq.New(4)
	q.Start()
	if _, err := q.Push([]byte("0123456789")); err != nil {
		t.Fatalf("a frame over the limit into an empty queue: %v", err)
	}
	if _, err := q.Push([]byte("x")); !errors.Is(err, outq.ErrFull) {
		t.Fatalf("push over the limit: %v, want ErrFull", err)
	}
	q.Written(q.Take()) // the bytes count until written
	if _, err := q.Push([]byte("0123")); err != nil {
		t.Fatalf("push after the queue emptied: %v", err)
	}
}

func TestHoldAndClose(t *testing.T) {
	q := outq.New(100)
	q.Start()
	q.Hold()
	if w, _ := q.Push([]byte("a")); w {
		t.Fatal("push while held made a writer")
	}
	if !q.Release() {
		t.Fatal("Release with a frame waiting: no writer")
	}
	done, write := q.Close()
	if write || done == nil {
		t.Fatalf("Close while a writer works: write %v, done %v", write, done)
	}
	if _, err := q.Push([]byte("b")); !errors.Is(err, outq.ErrClosed) {
		t.Fatalf("push after Close: %v, want ErrClosed", err)
	}
	select {
	case <-done:
		t.Fatal("done before the writer wrote")
	default:
	}
	q.Written(q.Take())
	if q.Take() != nil {
		t.Fatal("frames after the last")
	}
	<-done // closed by the writer's stop

	q = outq.New(100)
	q.Start()
	q.Hold()
	q.Push([]byte("a"))
	if _, write := q.Close(); !write {
		t.Fatal("Close with held frames and no writer: the caller is not the writer")
	}
}

// A dispatcher may begin (Hold) while the one before still ends (Release):
// the frames of the later wait for its Release, which writes them.
func TestOverlappingHolds(t *testing.T) {
	q := outq.New(100)
	q.Start()
	q.Hold()
	q.Hold()
	if w, _ := q.Push([]byte("a")); w {
		t.Fatal("push under two holds made a writer")
	}
	if q.Release() {
		t.Fatal("the first Release of two became the writer")
	}
	if w, _ := q.Push([]byte("b")); w {
		t.Fatal("push under the remaining hold made a writer")
	}
	if !q.Release() {
		t.Fatal("the last Release with frames waiting: no writer")
	}
	if got := q.Take(); len(got) != 2 {
		t.Fatalf("the writer took %d frames, want 2", len(got))
	}
}
