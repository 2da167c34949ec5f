// Package publish sends layer events to groups from outside a consumer: a
// token-authenticated HTTP handler for integrations, usable on any node,
// and the function behind it for Go code (an HTTP handler of the app, a
// background job).
//
// A request is POST <mount>/{group} with "Authorization: Bearer <token>"
// and a JSON object with a string "type" as its body. That object goes, as
// is, as a layer event to every member of the group on every node, and
// reaches the handlers their consumers registered for its type (Conn.On).
// The answer is 202 Accepted; 401 without the right token, 400 for a body
// that is not such an object, 413 over the size limit, 503 while the layer
// is unavailable.
//
// To reach one user's connections, have the consumer join a group of its
// own for the user (e.g. "user:" + name) and publish to that group.
package publish

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/chatterpro/chatterpro/channellayer"
)

// DefaultMaxBytes is the default size limit of a request body.
const DefaultMaxBytes = 64 << 10

// Options configures a Handler.
type Options struct {
	// Layer carries the events. Required.
	Layer channellayer.Layer
	// Token is the bearer token a request must carry. Required: an empty
	// token would open the API to everyone.
	Token string
	// MaxBytes is the size limit of a request body. Defaults to 64 KiB.
	MaxBytes int64
	// Logger receives failures to send. Defaults to slog.Default().
	Logger *slog.Logger
}

// Handler is the publish API. Mount it on a pattern with a {group}
// wildcard, e.g. mux.Handle("POST /api/publish/{group}", h); without one,
// the last element of the path names the group.
type Handler struct {
	opts Options
}

// New returns the publish API handler.
func New(opts Options) (*Handler, error) {
	if opts.Layer == nil {
		return nil, errors.New("publish: Options.Layer is required")
	}
	if opts.Token == "" {
		return nil, errors.New("publish: Options.Token is required (an empty token would let anyone publish)")
	}
	if opts.MaxBytes < 0 {
		return nil, errors.New("publish: Options.MaxBytes must not be negative")
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Handler{opts: opts}, nil
}

// Publish sends body, an encoded JSON object with a string "type", to every
// member of group: what the handler does for a request, for Go code.
func Publish(ctx context.Context, layer channellayer.Layer, group string, body []byte) error {
	if group == "" {
		return fmt.Errorf("%w: publish needs a group", channellayer.ErrInvalid)
	}
	m, err := channellayer.ParseMessage(body)
	if err != nil {
		return err
	}
	return layer.GroupSend(ctx, group, m)
}

// Authorized reports whether r carries token as its bearer token
// ("Authorization: Bearer <token>", the scheme in any case). The two are
// compared in constant time through their SHA-256 hashes, so neither the
// token nor its length leaks through timing. An empty token authorizes
// nothing.
func Authorized(r *http.Request, token string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || token == "" || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	g, w := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "publish with POST")
		return
	}
	if !Authorized(r, h.opts.Token) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="publish"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "send the API token as Authorization: Bearer <token>")
		return
	}
	group := r.PathValue("group")
	if group == "" {
		group = r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	}
	if group == "" {
		writeError(w, http.StatusBadRequest, "bad_group", "the path must end with the group's name")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "too_big", fmt.Sprintf("the body is over %d bytes", h.opts.MaxBytes))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "bad_body", "the body could not be read")
		return
	}
	err = Publish(r.Context(), h.opts.Layer, group, body)
	switch {
	case errors.Is(err, channellayer.ErrInvalid):
		writeError(w, http.StatusBadRequest, "bad_json", `the body must be a JSON object with a string "type", like {"type":"notice","text":"hi"}`)
	case errors.Is(err, channellayer.ErrUnavailable), errors.Is(err, channellayer.ErrClosed):
		h.opts.Logger.Warn("publish: sending failed", "group", group, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the channel layer is unavailable; nothing was sent, retry shortly")
	case err != nil:
		h.opts.Logger.Error("publish: sending failed", "group", group, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "sending failed")
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"accepted"}` + "\n"))
	}
}

func writeError(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code string `json:"code"`
		Text string `json:"text"`
	}{code, text})
}
