package sse

import (
	"context"
	"net/http"
	"sync"
)

// inbox holds the client frames of one event stream between the POSTs
// that bring them and the connection's reader (Stream.Read). It applies
// POSTs in the order of their seq, whichever node they landed on: a POST
// that comes before its turn waits here (a few, bounded), a repeat of one
// already applied is ignored. Its state is its own, under mu.
type inbox struct {
	limit int // bytes that may wait here, applied or early

	mu    sync.Mutex
	next  uint64              // the seq of the next POST to apply; seqs start at 1
	early map[uint64][][]byte // POSTs that came before their turn, by seq
	queue [][]byte            // applied frames, oldest first, not yet read
	bytes int                 // of queue and early
	end   error               // once set: the client is done (a close, a frame too big)
	wake  chan struct{}       // signalled when queue or end changes; capacity 1
}

// maxEarly is how far ahead of the next expected seq a POST may be:
// a client waits for each answer before its next POST, so only retries and
// pipelining clients ever get ahead, and not by much.
const maxEarly = 8

func newInbox(limit int) *inbox {
	return &inbox{limit: limit, next: 1, wake: make(chan struct{}, 1)}
}

// deliver applies the POST seq carrying frames, or keeps it until its turn.
// It returns the HTTP status for the POST: 204 applied, kept or repeated;
// 404 the client ended the stream; 429 too far ahead or too many bytes
// waiting for the consumer (the client retries the same seq later).
func (in *inbox) deliver(seq uint64, frames [][]byte) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.end != nil:
		return http.StatusNotFound
	case seq < in.next:
		return http.StatusNoContent // a repeat: applied already
	case seq >= in.next+maxEarly:
		return http.StatusTooManyRequests
	}
	if _, kept := in.early[seq]; kept {
		return http.StatusNoContent
	}
	size := 0
	for _, f := range frames {
		size += len(f)
	}
	if in.bytes+size > in.limit && in.bytes > 0 {
		return http.StatusTooManyRequests
	}
	in.bytes += size
	if seq != in.next {
		if in.early == nil {
			in.early = make(map[uint64][][]byte)
		}
		in.early[seq] = frames
		return http.StatusNoContent
	}
	in.queue = append(in.queue, frames...)
	in.next++
	for {
		f, ok := in.early[in.next]
		if !ok {
			break
		}
		delete(in.early, in.next)
		in.queue = append(in.queue, f...)
		in.next++
	}
	in.signal()
	return http.StatusNoContent
}

// finish ends the client's side with err, after the frames already applied;
// the first call wins. It reports whether it was the first.
func (in *inbox) finish(err error) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.end != nil {
		return false
	}
	in.end = err
	in.early = nil
	in.signal()
	return true
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// take returns the next applied frame, or the end once every frame was
// taken, or neither (nil, nil) when it must wait for wake.
func (in *inbox) take() ([]byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.queue) > 0 {
		f := in.queue[0]
		in.queue[0] = nil
		in.queue = in.queue[1:]
		if len(in.queue) == 0 {
			in.queue = nil // let the array go: an idle stream keeps none
		}
		in.bytes -= len(f)
		return f, nil
	}
	return nil, in.end
}

// read waits for the next frame or the end, until gone or left is closed
// (the stream is closed, the client went away) or ctx ends; it then
// returns errGone or ctx's error.
func (in *inbox) read(ctx context.Context, gone, left <-chan struct{}) ([]byte, error) {
	for {
		f, err := in.take()
		if f != nil || err != nil {
			return f, err
		}
		select {
		case <-in.wake:
		case <-gone:
			return nil, errGone
		case <-left:
			return nil, errGone
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
