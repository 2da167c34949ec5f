package sse

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Stream is the consumer.Transport of a connection over the fallback transport:
// server frames go out as events on the response of the GET that opened
// it; client frames come in through POSTs, on any node, and wait in its
// inbox until Read takes them.
//
// Writes (frames, keepalive comments, pings, the close event) come from
// several goroutines; wmu makes them one at a time, and each is bounded by
// a write deadline, so a writer waits at most that long for another. Once
// the stream is gone (CloseNow, a failed write, the client went away)
// nothing is written any more and Read returns.
type Stream struct {
	// Fixed at open.
	id      string // the stream ID the client names in its POSTs
	num     string // this stream's key in its hub
	secret  string // the unguessable part of id
	session string // the owner's session ("" anonymous): a POST must carry the same
	hub     *Hub
	in      *inbox
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration   // bounds a write without a deadline of its own
	every   time.Duration   // between keepalive comments
	reqDone <-chan struct{} // the GET's context: closed when the client went away

	dmu  sync.Mutex // orders deadline moves with CloseNow
	dead bool       // CloseNow ran: the deadline stays in the past

	wmu   sync.Mutex
	ended bool        // the close event was written, or the handler is done: no more writes
	werr  error       // a write failed: the stream is broken
	keep  *time.Timer // nil until the open event is written

	graceful   atomic.Bool // the close event went out: the response may end cleanly
	tooBig     atomic.Bool // Read reported a frame too big: CloseNow writes the close event
	peerClosed atomic.Bool // the client closed the stream: its response may end cleanly
	goneOnce   sync.Once
	gone       chan struct{} // closed when the stream can no longer be used
}

var (
	errGone  = errors.New("sse: event stream closed")
	errEnded = errors.New("sse: event stream ended")
)

// Read returns the next client frame, in the order the client sent them.
// After the client closed the stream it returns a websocket.CloseError with
// the client's code; after a frame over the size limit, an error wrapping
// websocket.ErrMessageTooBig, and CloseNow then writes the close event 1009
// (the connection closes with it as if the peer had).
func (s *Stream) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	f, err := s.in.read(ctx, s.gone, s.reqDone)
	if err != nil {
		var ce websocket.CloseError
		switch {
		case errors.Is(err, websocket.ErrMessageTooBig):
			s.tooBig.Store(true)
		case errors.As(err, &ce):
			s.peerClosed.Store(true)
		}
		return 0, nil, err
	}
	return websocket.MessageText, f, nil
}

// Write sends one frame as an event.
func (s *Stream) Write(ctx context.Context, text []byte) error {
	return s.WriteBatch(ctx, [][]byte{text})
}

// WriteBatch sends frames as events, flushed once.
func (s *Stream) WriteBatch(ctx context.Context, texts [][]byte) error {
	return s.write(ctx, func(w http.ResponseWriter) error {
		for _, p := range texts {
			if err := writeEvent(w, "", p); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ping checks the stream is alive: it writes a comment, which fails once
// the client is gone or stops reading for the write's deadline.
func (s *Stream) Ping(ctx context.Context) error {
	return s.write(ctx, writeComment)
}

// Close writes the close event with code and reason and ends the stream.
func (s *Stream) Close(code websocket.StatusCode, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	data, _ := json.Marshal(closeEvent{Code: int(code), Reason: reason})
	err := s.write(ctx, func(w http.ResponseWriter) error { return writeEvent(w, "close", data) })
	s.wmu.Lock()
	s.ended = true
	s.wmu.Unlock()
	if err == nil {
		s.graceful.Store(true)
	}
	s.markGone()
	return err
}

// closeEvent is the data of the close event.
type closeEvent struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// CloseNow ends the stream at once. A write under way is cut short, and
// unless the close event went out (or the client closed the stream) the
// response ends abruptly.
func (s *Stream) CloseNow() error {
	if s.tooBig.Load() && !s.graceful.Load() {
		_ = s.Close(websocket.StatusMessageTooBig, "frame too big")
	}
	s.markGone()
	if !s.graceful.Load() && !s.peerClosed.Load() {
		s.dmu.Lock()
		s.dead = true
		_ = s.rc.SetWriteDeadline(time.Now())
		s.dmu.Unlock()
	}
	return nil
}

// markGone makes Read return and POSTs find the stream no more.
func (s *Stream) markGone() {
	s.goneOnce.Do(func() {
		close(s.gone)
		s.in.finish(errEnded)
		s.hub.remove(s)
	})
}

// write runs fn on the response and flushes, bounded by ctx's deadline (or
// the stream's timeout).
func (s *Stream) write(ctx context.Context, fn func(w http.ResponseWriter) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.timeout)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr != nil {
		return s.werr
	}
	if s.ended {
		return errEnded
	}
	s.dmu.Lock()
	dead := s.dead
	if !dead {
		_ = s.rc.SetWriteDeadline(deadline)
	}
	s.dmu.Unlock()
	err := errGone
	if !dead {
		if err = fn(s.w); err == nil {
			err = s.rc.Flush()
		}
	}
	if err != nil {
		s.werr = err
		s.markGone()
	}
	return err
}

// keepalive writes a comment and sets the next one.
func (s *Stream) keepalive() {
	if s.Ping(context.Background()) != nil {
		return
	}
	s.wmu.Lock()
	if !s.ended {
		s.keep.Reset(s.every)
	}
	s.wmu.Unlock()
}

// Done ends all writing, for the handler about to return: a keepalive or a
// write still under way finishes first (its deadline bounds it).
func (s *Stream) Done() {
	s.markGone()
	s.wmu.Lock()
	s.ended = true
	if s.keep != nil {
		s.keep.Stop()
	}
	s.wmu.Unlock()
}

// startKeepalive sets the first keepalive comment, after the open event.
func (s *Stream) startKeepalive() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.ended {
		s.keep = time.AfterFunc(s.every, s.keepalive)
	}
}

// owns reports whether secret and session are the stream's (secret in
// constant time).
func (s *Stream) owns(secret, session string) (secretOK, sessionOK bool) {
	secretOK = subtle.ConstantTimeCompare([]byte(secret), []byte(s.secret)) == 1
	return secretOK, session == s.session
}

var (
	dataPrefix = []byte("data: ")
	eventEnd   = []byte("\n\n")
)

// writeEvent writes one event: "event: <name>" unless name is empty (a
// message), then p as data. A line break in p (CR, LF or CRLF) starts a new
// data line, which the client joins with "\n".
func writeEvent(w http.ResponseWriter, name string, p []byte) error {
	if name != "" {
		if _, err := w.Write([]byte("event: " + name + "\n")); err != nil {
			return err
		}
	}
	for {
		i := bytes.IndexAny(p, "\r\n")
		line := p
		if i >= 0 {
			line = p[:i]
		}
		if _, err := w.Write(dataPrefix); err != nil {
			return err
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if i < 0 {
			break
		}
		if _, err := w.Write(eventEnd[:1]); err != nil {
			return err
		}
		if p[i] == '\r' && i+1 < len(p) && p[i+1] == '\n' {
			i++
		}
		p = p[i+1:]
	}
	_, err := w.Write(eventEnd)
	return err
}

func writeComment(w http.ResponseWriter) error {
	_, err := w.Write([]byte(":\n\n"))
	return err
}
