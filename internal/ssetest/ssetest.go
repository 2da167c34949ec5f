// Package ssetest is a client of the fallback transport (Server-Sent Events
// plus POST) for tests: it opens a consumer route's event stream, reads its
// events in the background and posts frames, the way the browser client does.
package ssetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/chatterpro/chatterpro/internal/sseread"
)

// Event is one event of a stream. Name is "message" for a frame.
type Event struct {
	Name string
	Data string
}

// Close is the data of a close event.
type Close struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Stream is one open event stream. Its events are read in the background;
// Next returns them in order.
type Stream struct {
	// ID is the stream's ID from its open event.
	ID string
	// Route is the URL the stream was opened on, without query.
	Route string
	// Header is sent with every POST (cookies, Origin).
	Header http.Header
	// Client makes the POSTs. Defaults to http.DefaultClient.
	Client *http.Client

	body     io.Closer
	events   chan Event
	done     chan struct{} // closed when the reader has ended
	mu       sync.Mutex
	err      error // why reading ended
	comments int   // keepalive comments seen
	seq      uint64
}

// StatusError is returned by Open when the server refused the stream.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("ssetest: stream refused: HTTP %d %s", e.Code, strings.TrimSpace(e.Body))
}

// Status returns the HTTP status of a refused stream, 0 if err is not one.
func Status(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Open opens the event stream of the consumer route (an http:// URL with
// or without a query) and waits for its open event. header is sent with
// the GET and every POST. A refusal returns a *StatusError.
func Open(ctx context.Context, client *http.Client, route string, header http.Header) (*Stream, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u, err := url.Parse(route)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("transport", "sse")
	u.RawQuery = q.Encode()
	req, err := http.NewRequest(http.MethodGet, u.String(), nil) // not ctx: the stream outlives the call
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode, Body: string(b)}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("ssetest: Content-Type %q", ct)
	}
	u.RawQuery = ""
	s := &Stream{
		Route: u.String(), Header: header.Clone(), Client: client,
		body: resp.Body, events: make(chan Event, 1024), done: make(chan struct{}),
	}
	go s.read(resp.Body)
	ev, err := s.Next(ctx)
	if err == nil && ev.Name != "open" {
		err = fmt.Errorf("ssetest: first event %q %q, want open", ev.Name, ev.Data)
	}
	var open struct {
		Stream string `json:"stream"`
	}
	if err == nil {
		err = json.Unmarshal([]byte(ev.Data), &open)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.ID = open.Stream
	return s, nil
}

// Poster returns a Stream that only posts: to the stream id on route, with
// header. It reads nothing (for a stream opened by other means, or to post
// as someone else).
func Poster(route, id string, header http.Header) *Stream {
	return &Stream{ID: id, Route: route, Header: header, Client: http.DefaultClient}
}

// read parses events until the body ends.
func (s *Stream) read(body io.Reader) {
	defer close(s.done)
	defer close(s.events)
	br := bufio.NewReader(body)
	countComment := func() {
		s.mu.Lock()
		s.comments++
		s.mu.Unlock()
	}
	for {
		name, data, err := sseread.Next(br, nil, countComment)
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		s.events <- Event{Name: name, Data: string(data)}
	}
}

// ErrEnded is returned by Next once the stream's response has ended.
var ErrEnded = errors.New("ssetest: the stream ended")

// Next returns the next event, ErrEnded after the last one, or ctx's error.
func (s *Stream) Next(ctx context.Context) (Event, error) {
	select {
	case ev, ok := <-s.events:
		if !ok {
			return Event{}, ErrEnded
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Frame returns the data of the next event, which must be a message.
func (s *Stream) Frame(ctx context.Context) (string, error) {
	ev, err := s.Next(ctx)
	if err != nil {
		return "", err
	}
	if ev.Name != "message" {
		return "", fmt.Errorf("ssetest: got a %q event %s, want a message", ev.Name, ev.Data)
	}
	return ev.Data, nil
}

// Closed reads events up to the close event, drops the messages before it,
// and returns its data; it fails if the stream ends without one.
func (s *Stream) Closed(ctx context.Context) (Close, error) {
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			return Close{}, err
		}
		if ev.Name == "close" {
			var c Close
			err := json.Unmarshal([]byte(ev.Data), &c)
			return c, err
		}
	}
}

// Comments returns how many comments (keepalives) the stream has carried.
func (s *Stream) Comments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.comments
}

// Done is closed once the response has ended (or Close was called).
func (s *Stream) Done() <-chan struct{} { return s.done }

// Close closes the response and waits for the reader. It does not tell the
// server (see PostClose).
func (s *Stream) Close() {
	s.body.Close()
	for range s.events { // let a reader blocked on a full channel end
	}
	<-s.done
}

// Send posts frames (each a JSON value) with the next seq and returns the
// HTTP status.
func (s *Stream) Send(ctx context.Context, frames ...string) (int, error) {
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	return s.PostTo(ctx, s.Route, seq, frames...)
}

// PostTo posts frames with seq to route (the same route on any node).
func (s *Stream) PostTo(ctx context.Context, route string, seq uint64, frames ...string) (int, error) {
	raw := make([]json.RawMessage, len(frames))
	for i, f := range frames {
		raw[i] = json.RawMessage(f)
	}
	body, err := json.Marshal(struct {
		Seq    uint64            `json:"seq"`
		Frames []json.RawMessage `json:"frames"`
	}{seq, raw})
	if err != nil {
		return 0, err
	}
	return s.PostBody(ctx, route, "", body)
}

// PostBody posts body as is to route, with extra query parameters (e.g.
// "close=1000"), and returns the HTTP status.
func (s *Stream) PostBody(ctx context.Context, route, extra string, body []byte) (int, error) {
	u := route + "?transport=sse&stream=" + url.QueryEscape(s.ID)
	if extra != "" {
		u += "&" + extra
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range s.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// PostClose closes the stream from the client's side with code.
func (s *Stream) PostClose(ctx context.Context, code int) (int, error) {
	return s.PostBody(ctx, s.Route, "close="+strconv.Itoa(code), nil)
}

// Seq returns the seq of the last Send.
func (s *Stream) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}
