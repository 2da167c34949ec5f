package consumer

import "sync"

// outQueue is a connection's outgoing queue, bounded in bytes. Senders never
// wait: a frame that does not fit is refused, and the connection is closed.
type outQueue struct {
	mu     sync.Mutex
	frames [][]byte
	spare  [][]byte
	bytes  int
	limit  int
	closed bool
	signal chan struct{} // capacity 1: frames are waiting
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, signal: make(chan struct{}, 1)}
}

// push queues a frame; false if the queue is closed (ErrClosed) or full (ErrSlow).
func (q *outQueue) push(p []byte) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if q.bytes+len(p) > q.limit && q.bytes > 0 {
		q.mu.Unlock()
		return ErrSlow
	}
	q.frames = append(q.frames, p)
	q.bytes += len(p)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return nil
}

// take removes and returns every queued frame. The returned slice is valid
// until the next take.
func (q *outQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.frames
	for i := range q.spare {
		q.spare[i] = nil
	}
	q.frames = q.spare[:0]
	q.spare = out
	q.bytes = 0
	return out
}

// close refuses further frames; frames already queued stay for a last flush.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// drop discards what is queued.
func (q *outQueue) drop() {
	q.mu.Lock()
	q.closed = true
	q.frames, q.spare, q.bytes = nil, nil, 0
	q.mu.Unlock()
}
