// Package wire is a connection's write side and its close sequence: the
// outgoing queue, the writer that runs only while frames wait, and the
// closer that ends the transport once.
package wire

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer/internal/outq"
	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
	"github.com/chatterpro/chatterpro/consumer/internal/wsconn"
)

// Transport is what the wire writes to and closes: the write and close
// half of consumer.Transport.
type Transport interface {
	Write(ctx context.Context, text []byte) error
	Close(code websocket.StatusCode, reason string) error
	CloseNow() error
}

// batchWriter is consumer.BatchWriter.
type batchWriter interface {
	WriteBatch(ctx context.Context, texts [][]byte) error
}

// Mode says how a close proceeds.
type Mode int

const (
	Flush Mode = iota // write what is queued, then the close frame
	Now               // drop what is queued, then the close frame
	Peer              // the peer closed or vanished: nothing to write
)

// Host is the connection a Wire serves.
type Host interface {
	// Closing runs once, as the connection starts closing, with its code.
	// It must not block.
	Closing(code websocket.StatusCode)
	// Closed runs once the transport is closed, on the closer's goroutine.
	Closed()
}

// Wire writes a connection's frames and closes it.
//
// Ownership: the fields set by Init, and t (set by Attach before any
// writer or closer runs), never change afterwards. The queue keeps its own
// state (see outq.Queue) and hands out the writer role; the writer is a
// goroutine counted by the connection's tasks.Group, or the dispatcher
// that held the queue (Release). code, reason and mode are written once,
// inside closeOnce, and read by the closer it starts and, after Close
// returned, by the caller's goroutine (Code). closing and attached order
// Close with Attach: whichever comes second starts the closer, closerOnce
// makes sure only one does.
type Wire struct {
	out     *outq.Queue
	timeout time.Duration // bounds a write; how long a flushing close waits
	tasks   *tasks.Group
	host    Host
	goFlush func() // runFlush as a func value made once: starting it allocates nothing
	t       Transport

	closeOnce  sync.Once
	code       websocket.StatusCode
	reason     string
	mode       Mode
	closing    atomic.Bool // Close ran
	attached   atomic.Bool // Attach ran: the transport exists
	closerOnce sync.Once
}

// Init prepares w: a queue of queueBytes, writes bounded by timeout, the
// writer and closer counted by g.
func (w *Wire) Init(queueBytes int, timeout time.Duration, g *tasks.Group, h Host) {
	w.out, w.timeout, w.tasks, w.host = outq.New(queueBytes), timeout, g, h
	w.goFlush = w.runFlush
}

// Send queues a frame; it never blocks. A frame that does not fit closes
// the connection with 1013 and fails with outq.ErrFull; after Close it
// fails with outq.ErrClosed.
func (w *Wire) Send(p []byte) error {
	writer, err := w.out.Push(p)
	if err == outq.ErrFull {
		w.Close(websocket.StatusTryAgainLater, "slow consumer", Now)
	}
	if writer {
		w.startWriter()
	}
	return err
}

// Attach connects the transport: frames queued before go out, and a close
// that came first proceeds.
//
// The queue starts before attached is set: a closer, started here or by a
// Close that sees attached, must find the frames queued before it with
// their writer, not a queue that has not started and so has nothing to
// write.
func (w *Wire) Attach(t Transport) {
	w.t = t
	if w.out.Start() {
		w.startWriter()
	}
	w.attached.Store(true)
	if w.closing.Load() {
		w.startCloser()
	}
}

// Hold leaves the writing of what is sent from now on to the caller, until
// Release, which writes it (a dispatcher's run: one write for all the
// frames its events made).
func (w *Wire) Hold() { w.out.Hold() }

// Release ends Hold and writes what was sent meanwhile.
func (w *Wire) Release() {
	if w.out.Release() {
		w.flush()
	}
}

// Close starts closing once; later calls do nothing. It returns at once:
// the closer runs on a goroutine of its own once the transport is attached.
func (w *Wire) Close(code websocket.StatusCode, reason string, mode Mode) {
	w.closeOnce.Do(func() {
		w.code, w.reason, w.mode = code, reason, mode
		if mode != Flush {
			w.out.Drop()
		}
		w.closing.Store(true)
		w.host.Closing(code)
		if w.attached.Load() {
			w.startCloser()
		}
	})
}

// Code returns the close code, once Close has returned on the caller's
// side (every path that ends a connection calls it).
func (w *Wire) Code() websocket.StatusCode { return w.code }

func (w *Wire) startCloser() {
	w.closerOnce.Do(func() { w.tasks.Go(w.closeTransport) })
}

// closeTransport ends the connection on the wire: after the queued frames
// for a flushing close, at once otherwise.
func (w *Wire) closeTransport() {
	switch w.mode {
	case Peer:
	case Flush:
		if done, write := w.out.Close(); write {
			w.flush()
		} else {
			select {
			case <-done:
			case <-time.After(w.timeout):
			}
		}
		_ = w.t.Close(w.code, w.reason)
	case Now:
		_ = w.t.Close(w.code, w.reason)
	}
	_ = w.t.CloseNow()
	w.host.Closed()
}

func (w *Wire) startWriter() {
	if !w.tasks.Add() {
		w.out.WriterFailed()
		return
	}
	go w.goFlush()
}

func (w *Wire) runFlush() {
	defer w.tasks.Done()
	w.flush()
}

// flush, for the holder of the writer role, writes what is queued, in
// batches, and stops when the queue is empty; the next Send starts it
// again.
func (w *Wire) flush() {
	ws, _ := w.t.(*wsconn.Conn)
	own := ws != nil && ws.OwnWrites()
	for {
		frames := w.out.Take()
		if frames == nil {
			return
		}
		var err error
		if own {
			err = ws.WriteFrames(frames)
		} else {
			err = w.writeFrames(frames)
		}
		if err != nil {
			w.out.WriterFailed()
			w.Close(websocket.StatusAbnormalClosure, "", Peer)
			return
		}
		w.out.Written(frames)
	}
}

// writeFrames writes through the Transport interface, each batch bounded
// by timeout.
func (w *Wire) writeFrames(frames [][]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	if batch, ok := w.t.(batchWriter); ok {
		return batch.WriteBatch(ctx, frames)
	}
	for _, f := range frames {
		if err := w.t.Write(ctx, f); err != nil {
			return err
		}
	}
	return nil
}
