package consumer

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer/internal/sse"
)

// The fallback transport serves a consumer where a websocket cannot be
// opened: Server-Sent Events carry the server's frames, POSTs the client's.
// Routing serves it on the websocket's own route with ?transport=sse (see
// package routing); the consumer cannot tell it from a websocket. The
// requests are documented in docs/protocol.md:
//
//	GET  {route}?transport=sse[&since=…]                 the event stream
//	POST {route}?transport=sse&stream=<id>               {"seq":n,"frames":[…]}
//	POST {route}?transport=sse&stream=<id>&close=<code>  the client closes
//
// A stream's ID holds 128 random bits and the name of the layer channel on
// which its node receives the POSTs other nodes forward, so a POST may land
// on any node: no sticky sessions.

// sseKeepalive is how often an idle stream gets a comment, so that proxies
// and the client's own timeouts see it alive.
var sseKeepalive = 15 * time.Second

// ServeSSE serves the GET that opens an event stream for cons: Connect, then
// an "open" event with the stream's ID, then each frame the consumer sends
// as a "message" event, a comment every 15 s while idle, and at the end a
// "close" event with the close code and reason. The client's frames come
// through ServeSSEPost. Refusals answer with an HTTP status, as
// ServeWebSocket does. The origin is not checked here: routing does that
// before (see package routing).
func (s *Server) ServeSSE(w http.ResponseWriter, r *http.Request, scope Scope, cons Consumer) {
	opts := sse.Options{
		InboxBytes:   4 * s.ssePostLimit(),
		WriteTimeout: s.opts.WriteTimeout,
		Keepalive:    sseKeepalive,
	}
	if scope.User != nil {
		opts.Session = scope.User.Session
	}
	var st *sse.Stream
	err := s.Serve(r.Context(), scope, cons, func() (Transport, error) {
		var err error
		st, err = s.sse.Open(s.base, w, r, opts)
		switch {
		case errors.Is(err, sse.ErrClosed):
			return nil, ErrShutdown
		case err != nil:
			return nil, err
		}
		return st, nil
	})
	if st != nil {
		st.Done() // nothing writes to w once this handler returns
	}
	var refuse *RefuseError
	switch {
	case err == nil:
	case errors.As(err, &refuse):
		http.Error(w, refuse.Reason, refuse.Status)
	case errors.Is(err, ErrShutdown):
		http.Error(w, "server restarting, try another", http.StatusServiceUnavailable)
	case errors.Is(err, ErrBusy):
		busy(w)
	case st != nil, r.Context().Err() != nil:
		s.log.Debug("event stream failed at its start", "path", scope.Path, "err", err)
	case errors.Is(err, channellayer.ErrUnavailable):
		http.Error(w, "temporarily unavailable, retry shortly", http.StatusServiceUnavailable)
	default:
		s.log.Error("event stream failed", "path", scope.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

// ssePostLimit bounds a POST's body: eight frames of the read limit, and
// room for the JSON around them.
func (s *Server) ssePostLimit() int { return 8*int(s.opts.ReadLimit) + 1024 }

// ServeSSEPost serves a POST of the fallback transport: frames for the
// stream named by ?stream=, or with ?close=<code> the client's close of it.
// user is who makes the POST (as for a websocket, routing finds it): its
// session must be the stream's. The POST may land on any node; it reaches
// the stream's node through the layer. The answer is 204 once the frames
// are in the stream's order (or were already), 400 for a malformed request,
// 403 when the session is not the stream's, 404 for an unknown or closed
// stream, 413 for a body or a frame over the size limit (the stream is
// closed with 1009, as a websocket would be), 429 when the POST is too far
// ahead of the stream's order or too many frames wait for the consumer, 503
// when the layer or the stream's node did not answer.
func (s *Server) ServeSSEPost(w http.ResponseWriter, r *http.Request, user *User) {
	status := s.ssePost(w, r, user)
	switch status {
	case http.StatusNoContent:
		w.WriteHeader(status)
		return
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, ssePostRefusals[status], status)
}

var ssePostRefusals = map[int]string{
	http.StatusBadRequest:            `bad request: the body must be {"seq":<n from 1>,"frames":[...]}, or ?close=<code> with 1000, 1001 or 3000-4999`,
	http.StatusForbidden:             "forbidden: the stream belongs to another session",
	http.StatusNotFound:              "unknown or closed stream: open a new one",
	http.StatusRequestEntityTooLarge: "too large: a frame or the body is over the size limit",
	http.StatusTooManyRequests:       "too many: wait for the answers to earlier POSTs",
	http.StatusServiceUnavailable:    "temporarily unavailable, retry shortly",
}

func (s *Server) ssePost(w http.ResponseWriter, r *http.Request, user *User) int {
	q := r.URL.Query()
	secret, num, inbox, ok := sse.ParseID(q.Get("stream"))
	if !ok {
		return http.StatusNotFound
	}
	p := sse.Post{Stream: num, Secret: secret}
	if user != nil {
		p.Session = user.Session
	}
	if c := q.Get("close"); c != "" {
		code, err := strconv.Atoi(c)
		if err != nil || !(code == 1000 || code == 1001 || code >= 3000 && code <= 4999) {
			return http.StatusBadRequest
		}
		p.Close = code
		return s.sse.Forward(r.Context(), inbox, p)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.ssePostLimit())))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		p.TooBig = true
	case err != nil:
		return http.StatusBadRequest
	default:
		var in struct {
			Seq    uint64            `json:"seq"`
			Frames []json.RawMessage `json:"frames"`
		}
		if json.Unmarshal(body, &in) != nil || in.Seq == 0 {
			return http.StatusBadRequest
		}
		p.Seq, p.Frames = in.Seq, in.Frames
		for _, f := range in.Frames {
			if int64(len(f)) > s.opts.ReadLimit {
				p.TooBig, p.Frames = true, nil
				break
			}
		}
	}
	status := s.sse.Forward(r.Context(), inbox, p)
	if p.TooBig && status == http.StatusNoContent {
		status = http.StatusRequestEntityTooLarge
	}
	return status
}
