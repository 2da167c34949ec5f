package sse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Hub finds this server's event streams for the POSTs that name them.
// A POST may land on any node: the node that holds the stream receives it
// on its inbox, one layer channel for all its streams, and answers on the
// reply channel the POST's node made for it. A POST that lands on the
// holding node itself skips the layer.
//
// The hub starts with the server's first stream: it makes the inbox and
// one goroutine that receives on it, both ended by Close (Server.Shutdown).
// layer and log are fixed by NewHub; the rest is under mu.
type Hub struct {
	mu      sync.Mutex
	layer   channellayer.Layer
	log     *slog.Logger
	inbox   string             // "" until the first stream
	streams map[string]*Stream // by Stream.num
	last    uint64             // numbers streams
	closed  bool
	stop    context.CancelFunc // ends the receiver
	done    chan struct{}      // closed when the receiver has ended
}

// replyTimeout bounds how long a POST waits for the holding node's answer.
const replyTimeout = 5 * time.Second

// Post is a POST on its way to the node that holds its stream: frames
// in their turn, or the client's close, or word that a frame was over the
// size limit.
type Post struct {
	Stream  string            `json:"stream"`  // Stream.num
	Secret  string            `json:"secret"`  // as the client gave it
	Session string            `json:"session"` // the POST's session, "" anonymous
	Seq     uint64            `json:"seq,omitempty"`
	Frames  []json.RawMessage `json:"frames,omitempty"`
	Close   int               `json:"close,omitempty"`   // the client closes the stream with this code
	TooBig  bool              `json:"too_big,omitempty"` // the POST was over the size limit
	Reply   string            `json:"reply,omitempty"`   // the channel for the answer, for a POST from another node
}

// answer is the holding node's answer to a POST from another node.
type answer struct {
	Status int `json:"status"`
}

// ErrClosed refuses a stream once the hub is closed.
var ErrClosed = errors.New("sse: hub closed")

// NewHub returns the hub of a server's event streams on layer. Close ends it.
func NewHub(layer channellayer.Layer, log *slog.Logger) *Hub {
	return &Hub{layer: layer, log: log}
}

// open registers st, giving it its number and ID; it makes the inbox (with
// ctx) for the first stream.
func (h *Hub) open(ctx context.Context, st *Stream) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.inbox == "" {
		name, err := h.layer.NewChannel(ctx)
		if err != nil {
			return fmt.Errorf("sse: creating the event streams' inbox: %w", err)
		}
		rctx, stop := context.WithCancel(context.Background())
		h.inbox = name
		h.streams = make(map[string]*Stream)
		h.stop, h.done = stop, make(chan struct{})
		go h.receive(rctx, name)
	}
	h.last++
	st.num = strconv.FormatUint(h.last, 36)
	st.id = st.secret + "." + st.num + "." + h.inbox
	h.streams[st.num] = st
	return nil
}

// remove forgets st: POSTs that name it from now on get 404.
func (h *Hub) remove(st *Stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[st.num] == st {
		delete(h.streams, st.num)
	}
}

// local reports whether inbox is this hub's.
func (h *Hub) local(inbox string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inbox != "" && inbox == h.inbox
}

// Close refuses new streams, ends the receiver and releases the inbox.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	stop, done, inbox := h.stop, h.done, h.inbox
	h.stop = nil
	h.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.layer.DiscardChannel(ctx, inbox)
}

// receive applies the POSTs other nodes forward, one at a time, and answers
// each, until ctx ends or the layer closes.
func (h *Hub) receive(ctx context.Context, inbox string) {
	defer close(h.done)
	for {
		m, err := h.layer.Receive(ctx, inbox)
		switch {
		case err == nil:
		case ctx.Err() != nil, errors.Is(err, channellayer.ErrClosed), errors.Is(err, channellayer.ErrNoChannel):
			return
		default:
			h.log.Warn("receiving forwarded POSTs failed", "channel", inbox, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		var p Post
		if err := m.Decode(&p); err != nil {
			h.log.Debug("dropped a malformed forwarded POST", "channel", inbox, "err", err)
			continue
		}
		status := h.apply(p)
		if p.Reply == "" {
			continue
		}
		answer, _ := channellayer.NewMessage("sse.answer", answer{Status: status})
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := h.layer.Send(sctx, p.Reply, answer); err != nil {
			h.log.Debug("answering a forwarded POST failed", "channel", p.Reply, "err", err)
		}
		cancel()
	}
}

// apply hands a POST to the stream it names and returns its HTTP status.
func (h *Hub) apply(p Post) int {
	h.mu.Lock()
	st := h.streams[p.Stream]
	h.mu.Unlock()
	if st == nil {
		return http.StatusNotFound
	}
	switch secretOK, sessionOK := st.owns(p.Secret, p.Session); {
	case !secretOK:
		return http.StatusNotFound // an unknown stream, as far as the client may know
	case !sessionOK:
		return http.StatusForbidden
	}
	switch {
	case p.TooBig:
		st.in.finish(fmt.Errorf("sse: a POST to the event stream: %w", websocket.ErrMessageTooBig))
		return http.StatusRequestEntityTooLarge
	case p.Close != 0:
		st.in.finish(websocket.CloseError{Code: websocket.StatusCode(p.Close)})
		return http.StatusNoContent
	}
	frames := make([][]byte, len(p.Frames))
	for i, f := range p.Frames {
		frames[i] = f
	}
	return st.in.deliver(p.Seq, frames)
}

// Forward takes p to the hub of the node that holds its stream (inbox) and
// returns that hub's answer as an HTTP status, or 404 if that node is gone,
// 503 if the layer failed or the answer did not come in time.
func (h *Hub) Forward(ctx context.Context, inbox string, p Post) int {
	if h.local(inbox) {
		return h.apply(p)
	}
	ctx, cancel := context.WithTimeout(ctx, replyTimeout)
	defer cancel()
	reply, err := h.layer.NewChannel(ctx)
	if err != nil {
		return http.StatusServiceUnavailable
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = h.layer.DiscardChannel(dctx, reply)
	}()
	p.Reply = reply
	m, err := channellayer.NewMessage("sse.post", p)
	if err != nil {
		return http.StatusBadRequest
	}
	if err := h.layer.Send(ctx, inbox, m); err != nil {
		if errors.Is(err, channellayer.ErrNoChannel) || errors.Is(err, channellayer.ErrInvalid) {
			return http.StatusNotFound
		}
		return http.StatusServiceUnavailable
	}
	m, err = h.layer.Receive(ctx, reply)
	if err != nil {
		return http.StatusServiceUnavailable
	}
	var a answer
	if err := m.Decode(&a); err != nil || a.Status == 0 {
		return http.StatusServiceUnavailable
	}
	return a.Status
}

// secretLen is the length of a stream ID's secret: 16 random bytes in
// unpadded base64url.
const secretLen = 22

// ParseID splits a stream ID, "<secret>.<number>.<inbox channel>".
func ParseID(id string) (secret, num, inbox string, ok bool) {
	secret, rest, ok1 := strings.Cut(id, ".")
	num, inbox, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || len(secret) != secretLen || num == "" || inbox == "" {
		return "", "", "", false
	}
	return secret, num, inbox, true
}
