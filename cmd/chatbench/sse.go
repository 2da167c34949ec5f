package main

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
	"time"

	"github.com/chatterpro/chatterpro/internal/sseread"
)

// The fallback transport's client: a member that cannot open a websocket
// reads the room's frames from a Server-Sent Events stream
// (GET {route}?transport=sse) and sends its own in POSTs
// ({"seq":n,"frames":[...]}), as docs/protocol.md describes. The sse-*
// scenarios run ChatterPro's members over it, beside the same scenario
// over websockets.

// The scenarios of the fallback transport: fan-out and idle, each run
// against one node over websockets (targetOurs) and one over the fallback
// (targetOursSSE), reported side by side with their ratio.
const (
	scenarioSSEFanout = "sse-fanout"
	scenarioSSEIdle   = "sse-idle"
)

func isSSEScenario(s string) bool { return s == scenarioSSEFanout || s == scenarioSSEIdle }

// sseConn is one member's event stream and the URL its POSTs go to.
type sseConn struct {
	hc      *http.Client
	body    io.ReadCloser
	cancel  context.CancelFunc // ends the stream's request
	br      *bufio.Reader
	postURL string // {route}?transport=sse&stream=<id>
	cookie  string
	seq     uint64 // of the last POST applied; only the sender touches it
}

// sseRetries bounds how often one POST is repeated after a 429 or 503
// (the server asks to retry the same seq later).
const sseRetries = 50

// errSSEClosed is the error of a stream the server closed with a close
// event.
var errSSEClosed = errors.New("chatbench: the server closed the event stream")

// openSSE opens the room's event stream on base with the session cookie
// and returns it with the first frame (history).
func (nc *netClient) openSSE(ctx context.Context, base, room, cookie string) (*sseConn, []byte, error) {
	route := base + "/ws/chat/" + url.PathEscape(room) + "/?transport=sse"
	// The stream outlives ctx, which bounds only the opening.
	rctx, rcancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, route, nil)
	if err != nil {
		rcancel()
		return nil, nil, err
	}
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Accept", "text/event-stream")
	stop := context.AfterFunc(ctx, rcancel)
	defer stop()
	resp, err := nc.hc.Do(req)
	if err != nil {
		rcancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		rcancel()
		return nil, nil, fmt.Errorf("event stream: status %d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	s := &sseConn{hc: nc.hc, body: resp.Body, cancel: rcancel, br: bufio.NewReaderSize(resp.Body, 16<<10), cookie: cookie}
	name, data, err := s.next(nil)
	if err == nil && name != "open" {
		err = fmt.Errorf("first event %q, want open", name)
	}
	var open struct {
		Stream string `json:"stream"`
	}
	if err == nil {
		err = json.Unmarshal(data, &open)
	}
	if err == nil && open.Stream == "" {
		err = errors.New("open event without a stream ID")
	}
	var first []byte
	if err == nil {
		name, first, err = s.next(nil)
		if err == nil && name != "message" {
			err = fmt.Errorf("second event %q, want a frame", name)
		}
	}
	if err != nil {
		resp.Body.Close()
		rcancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, nil, fmt.Errorf("event stream: %w", err)
	}
	s.postURL = base + "/ws/chat/" + url.PathEscape(room) + "/?transport=sse&stream=" + url.QueryEscape(open.Stream)
	return s, first, nil
}

// next reads the next event: its name ("message" for a frame) and data,
// appended to buf. Comments (keepalives) are skipped.
func (s *sseConn) next(buf []byte) (string, []byte, error) {
	return sseread.Next(s.br, buf, nil)
}

// sseReadLoop measures the stream's frames until it ends.
func (c *client) sseReadLoop() {
	defer close(c.done)
	defer c.closed.Store(true)
	var buf []byte
	for {
		name, data, err := c.sse.next(buf)
		if err != nil {
			c.readErr = err
			return
		}
		buf = data
		switch name {
		case "message":
			c.handle(data, time.Now())
		case "close":
			c.readErr = fmt.Errorf("%w: %s", errSSEClosed, data)
			return
		}
	}
}

// post sends one frame with the next seq, repeating it (same seq) while
// the server answers 429 or 503.
func (s *sseConn) post(ctx context.Context, frame []byte) error {
	seq := s.seq + 1
	body := make([]byte, 0, len(frame)+32)
	body = append(body, `{"seq":`...)
	body = strconv.AppendUint(body, seq, 10)
	body = append(body, `,"frames":[`...)
	body = append(body, frame...)
	body = append(body, "]}"...)
	for try := 0; ; try++ {
		code, err := s.postBody(ctx, s.postURL, body)
		if err != nil {
			return err
		}
		switch {
		case code == http.StatusNoContent:
			s.seq = seq
			return nil
		case (code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable) && try < sseRetries:
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		default:
			return fmt.Errorf("POST: status %d", code)
		}
	}
}

func (s *sseConn) postBody(ctx context.Context, u string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Cookie", s.cookie)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// close leaves (close=1000, as a websocket's normal closure) and ends the
// response.
func (s *sseConn) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = s.postBody(ctx, s.postURL+"&close=1000", nil)
	s.body.Close()
	s.cancel()
}
