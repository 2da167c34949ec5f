// Package outq is a connection's outgoing queue: bounded in bytes, never
// making a sender wait, with at most one writer at a time and none while
// nothing waits.
package outq

import (
	"errors"
	"sync"

	"github.com/chatterpro/chatterpro/internal/slicepool"
)

var (
	// ErrClosed is returned by Push once the queue is closed.
	ErrClosed = errors.New("outq: queue closed")
	// ErrFull is returned by a Push that would go over the queue's limit.
	ErrFull = errors.New("outq: queue full")
)

// Queue holds the frames of one connection until they are written.
//
// Senders (Push) never wait: a frame that does not fit is refused. The
// writer is a role, not a goroutine: Push, Start, Release and Close report
// when the caller has become the writer, and the writer then calls Take and
// Written until Take returns nil (or WriterFailed). Exactly one caller
// holds the role at a time, so frames are written in the order pushed.
//
// Every field is under mu; all methods are safe for concurrent use.
type Queue struct {
	mu       sync.Mutex
	frames   [][]byte
	spare    [][]byte
	bytes    int // queued and being written: a frame counts until it is on the wire
	limit    int
	closed   bool
	started  bool          // the transport is up: pushes may make a writer
	flushing bool          // the writer role is taken
	holds    int           // holders (see Hold): the last to Release writes what is queued
	idle     chan struct{} // closed when the writer stops, for a waiting closer
}

// New returns a queue that holds at most limit bytes (one frame more, if
// the queue is empty: a frame larger than the limit still goes out alone).
func New(limit int) *Queue { return &Queue{limit: limit} }

// frameArrays lend a queue the arrays of its frame slices while it writes:
// a stopped writer gives them back, so an idle connection keeps none, and
// a busy one allocates none per batch. Three sizes cover what a paced
// dispatcher queues at once.
var frameArrays = slicepool.New[[]byte](8, 64, 512)

// Push queues a frame, which must not be modified afterwards. It reports
// whether the caller has become the writer. It fails with ErrClosed after
// Close, Drop or WriterFailed, and with ErrFull when the frame does not fit.
func (q *Queue) Push(p []byte) (writer bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, ErrClosed
	}
	if q.bytes+len(p) > q.limit && q.bytes > 0 {
		return false, ErrFull
	}
	q.frames = frameArrays.Append(q.frames, p)
	q.bytes += len(p)
	return q.claimWriter(), nil
}

// Start marks the transport up: until then frames wait without a writer.
// It reports whether the caller has become the writer of frames queued
// before.
func (q *Queue) Start() (writer bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.started = true
	return len(q.frames) > 0 && q.claimWriter()
}

func (q *Queue) claimWriter() bool {
	if !q.started || q.flushing || q.holds > 0 {
		return false
	}
	q.flushing = true
	return true
}

// Hold makes pushes leave the writing to the caller (a dispatcher about to
// queue frames); Release ends that and reports whether the caller has now
// become the writer of what was queued meanwhile. Writing on the
// dispatcher's goroutine saves starting a writer for every event. Holds
// count: a dispatcher may begin while the one before still ends, and the
// last Release writes.
func (q *Queue) Hold() {
	q.mu.Lock()
	q.holds++
	q.mu.Unlock()
}

// Release ends a Hold (see Hold).
func (q *Queue) Release() (writer bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.holds--
	return len(q.frames) > 0 && q.claimWriter() // claimWriter refuses while others hold
}

// Take, for the writer, removes and returns every queued frame, valid until
// the next Take. If none are left it gives up the writer role and returns
// nil.
func (q *Queue) Take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 {
		q.stopWriter()
		return nil
	}
	out := q.frames
	clear(q.spare)
	q.frames = q.spare[:0]
	q.spare = out
	return out
}

// Written, for the writer, releases the bytes of frames now on the wire.
func (q *Queue) Written(frames [][]byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	q.mu.Lock()
	q.bytes = max(0, q.bytes-n)
	q.mu.Unlock()
}

func (q *Queue) stopWriter() {
	q.flushing = false
	// Idle connections keep no buffers (the writer is done with spare).
	frameArrays.Put(q.spare)
	frameArrays.Put(q.frames)
	q.frames, q.spare = nil, nil
	if q.idle != nil {
		close(q.idle)
		q.idle = nil
	}
}

// WriterFailed, for the writer after a transport error, gives up the role
// and closes the queue: nothing more will be written. A caller that could
// not start the writer it was to become calls it too.
func (q *Queue) WriterFailed() {
	q.mu.Lock()
	q.closed = true
	q.frames, q.spare, q.bytes = nil, nil, 0
	q.stopWriter()
	q.mu.Unlock()
}

// Close refuses further frames and says what becomes of those queued. If a
// writer is at work, done is closed once it has written them. If frames
// wait with no writer (a holder had them), write is true: the caller is now
// the writer. Otherwise nothing is left to write and done is closed.
func (q *Queue) Close() (done <-chan struct{}, write bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	if q.flushing {
		ch := make(chan struct{})
		q.idle = ch
		return ch, false
	}
	if len(q.frames) > 0 && q.started {
		q.flushing = true
		return nil, true
	}
	ch := make(chan struct{})
	close(ch)
	return ch, false
}

// Drop discards what is queued and refuses further frames.
func (q *Queue) Drop() {
	q.mu.Lock()
	q.closed = true
	q.frames, q.spare, q.bytes = nil, nil, 0
	q.mu.Unlock()
}
