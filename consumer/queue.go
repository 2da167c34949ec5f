package consumer

import (
	"sync"

	"github.com/chatterpro/chatterpro/internal/slicepool"
)

// outQueue is a connection's outgoing queue, bounded in bytes. Senders never
// wait: a frame that does not fit is refused, and the connection is closed.
// A writer goroutine runs only while frames are waiting (see Conn.flush).
type outQueue struct {
	mu       sync.Mutex
	frames   [][]byte
	spare    [][]byte
	bytes    int // queued and being written: a frame counts until it is on the wire
	limit    int
	closed   bool
	started  bool          // the transport is up: pushes may start a writer
	flushing bool          // a writer is running
	held     bool          // a dispatcher will write what is queued when it is done
	idle     chan struct{} // closed when the writer stops, for a waiting closer
}

func newOutQueue(limit int) *outQueue { return &outQueue{limit: limit} }

// frameArrays lend a connection the arrays of its frame slices while it
// writes: a stopped writer gives them back, so an idle connection keeps
// none, and a busy one allocates none per batch. Three sizes cover what a
// paced dispatcher queues at once (see Options.Coalesce).
var frameArrays = slicepool.New[[]byte](8, 64, 512)

// push queues a frame. It reports whether the caller must start a writer.
func (q *outQueue) push(p []byte) (startWriter bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, ErrClosed
	}
	if q.bytes+len(p) > q.limit && q.bytes > 0 {
		return false, ErrSlow
	}
	q.frames = frameArrays.Append(q.frames, p)
	q.bytes += len(p)
	return q.claimWriter(), nil
}

// start marks the transport up; it reports whether frames queued before
// need a writer.
func (q *outQueue) start() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.started = true
	return len(q.frames) > 0 && q.claimWriter()
}

func (q *outQueue) claimWriter() bool {
	if !q.started || q.flushing || q.held {
		return false
	}
	q.flushing = true
	return true
}

// hold makes pushes leave the writing to the caller (a dispatcher about to
// queue frames); release ends that and reports whether the caller must now
// write what was queued meanwhile. Writing on the dispatcher's goroutine
// saves starting a writer for every event.
func (q *outQueue) hold() {
	q.mu.Lock()
	q.held = true
	q.mu.Unlock()
}

func (q *outQueue) release() (write bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held = false
	return len(q.frames) > 0 && q.claimWriter()
}

// take removes and returns every queued frame, valid until the next take.
// If none are left it marks the writer stopped and returns nil.
func (q *outQueue) take() [][]byte {
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

// written releases the bytes of frames the writer has sent.
func (q *outQueue) written(frames [][]byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	q.mu.Lock()
	q.bytes = max(0, q.bytes-n)
	q.mu.Unlock()
}

func (q *outQueue) stopWriter() {
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

// writerFailed stops the writer after a transport error; nothing more
// will be written.
func (q *outQueue) writerFailed() {
	q.mu.Lock()
	q.closed = true
	q.frames, q.spare, q.bytes = nil, nil, 0
	q.stopWriter()
	q.mu.Unlock()
}

// close refuses further frames. If a writer runs it returns a channel
// closed once the frames already queued are written; if frames wait with
// no writer (a dispatcher held it), write is true and the caller writes
// them; else nothing is left to write.
func (q *outQueue) close() (done <-chan struct{}, write bool) {
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

// drop discards what is queued and refuses further frames.
func (q *outQueue) drop() {
	q.mu.Lock()
	q.closed = true
	q.frames, q.spare, q.bytes = nil, nil, 0
	q.mu.Unlock()
}
