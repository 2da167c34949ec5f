// Package sse is the fallback transport of package consumer: a Stream is a
// consumer.Transport whose server frames go out as Server-Sent Events on
// the response of the GET that opened it, and whose client frames come in
// through POSTs, on any node, by way of each node's Hub.
package sse

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"
)

// Options configures a stream (see Hub.Open).
type Options struct {
	Session      string        // the owner's session: its POSTs must carry the same ("" anonymous)
	InboxBytes   int           // bytes of client frames that may wait for the consumer
	WriteTimeout time.Duration // bounds a write without a deadline of its own
	Keepalive    time.Duration // between comments on an idle stream
}

// Open registers a stream and starts its response: the headers and the
// "open" event with the stream's ID. ctx bounds the making of the hub's
// inbox (for the first stream). It fails with ErrClosed once the hub is
// closed. The caller must call the stream's Done before its handler
// returns.
func (h *Hub) Open(ctx context.Context, w http.ResponseWriter, r *http.Request, opts Options) (*Stream, error) {
	var key [16]byte
	_, _ = rand.Read(key[:]) // never fails (crypto/rand)
	st := &Stream{
		secret:  base64.RawURLEncoding.EncodeToString(key[:]),
		session: opts.Session,
		in:      newInbox(opts.InboxBytes),
		hub:     h,
		w:       w,
		rc:      http.NewResponseController(w),
		timeout: opts.WriteTimeout,
		every:   opts.Keepalive,
		reqDone: r.Context().Done(),
		gone:    make(chan struct{}),
	}
	if err := h.open(ctx, st); err != nil {
		return nil, err
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	w.WriteHeader(http.StatusOK)
	open, _ := json.Marshal(struct {
		Stream string `json:"stream"`
	}{st.id})
	if err := st.write(r.Context(), func(w http.ResponseWriter) error { return writeEvent(w, "open", open) }); err != nil {
		st.Done()
		return nil, err
	}
	st.startKeepalive()
	return st, nil
}
