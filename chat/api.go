package chat

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatterpro/chatterpro/publish"
)

// maxAPIBody bounds the body of a publish API request.
const maxAPIBody = 16 << 10

// maxAPILimiters is how many rooms' API rate limiters a node keeps before
// it forgets those that are full again.
const maxAPILimiters = 1024

// publishAPI serves POST /api/rooms/{room}/messages: a server-side sender
// (a bot, a job) posts {"user":...,"text":...} with the bearer token; the
// message is recorded and delivered like any other, marked "bot":true, and
// its frame is the answer (201). Off (404) without Config.APIToken.
type publishAPI struct {
	app *App

	mu       sync.Mutex
	limiters map[string]*rate.Limiter // by room; nil map: no limit
}

func newPublishAPI(a *App) *publishAPI {
	p := &publishAPI{app: a}
	if a.cfg.Rate > 0 {
		p.limiters = make(map[string]*rate.Limiter)
	}
	return p
}

func (p *publishAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := p.app
	if a.cfg.APIToken == "" {
		http.NotFound(w, r)
		return
	}
	if !publish.Authorized(r, a.cfg.APIToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatterpro"`)
		apiError(w, http.StatusUnauthorized, "unauthorized", "send the API token as Authorization: Bearer <token>")
		return
	}
	room, err := ValidRoom(r.PathValue("room"))
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_room", err.Error())
		return
	}
	var in struct {
		User *string `json:"user"`
		Text *string `json:"text"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err := dec.Decode(&in); err != nil || dec.More() {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusBadRequest, codeBadJSON, "the body is too large: a user and a text are all it takes")
			return
		}
		apiError(w, http.StatusBadRequest, codeBadJSON, `send one JSON object like {"user":"bot","text":"hi"}`)
		return
	}
	if in.User == nil {
		apiError(w, http.StatusBadRequest, "bad_user", "a message needs a user")
		return
	}
	user, err := ValidNickname(*in.User)
	if err != nil {
		apiError(w, http.StatusBadRequest, "bad_user", err.Error())
		return
	}
	if in.Text == nil {
		apiError(w, http.StatusBadRequest, codeBadText, "a message needs a text")
		return
	}
	text, err := ValidText(*in.Text)
	if err != nil {
		apiError(w, http.StatusBadRequest, codeBadText, err.Error())
		return
	}
	if !p.allow(room) {
		w.Header().Set("Retry-After", "1")
		apiError(w, http.StatusTooManyRequests, codeRateLimited, "too many messages to this room per second; this one was not sent")
		return
	}
	m, err := messageEvent(user, text, "", true)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal", "the message could not be built")
		return
	}
	start := time.Now()
	rec, err := a.history.GroupSendRecorded(r.Context(), room, m)
	a.metrics.observe("group_send_recorded", start, err)
	if err != nil {
		a.log.Warn("publishing a message from the API failed", "room", room, "err", err)
		apiError(w, http.StatusServiceUnavailable, codeUnavailable, "the chat is temporarily unavailable: the message was not sent, try again")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(rec.Body)
}

// allow takes a token of the room's API rate limit: Config.Rate messages
// per second on this node, burst twice that.
func (p *publishAPI) allow(room string) bool {
	if p.limiters == nil {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.limiters[room]
	if l == nil {
		if len(p.limiters) >= maxAPILimiters {
			for name, old := range p.limiters {
				if old.Tokens() >= float64(old.Burst()) {
					delete(p.limiters, name) // full again: as good as new
				}
			}
		}
		rt := p.app.cfg.Rate
		l = rate.NewLimiter(rate.Limit(rt), max(1, int(2*rt)))
		p.limiters[room] = l
	}
	return l.Allow()
}

func apiError(w http.ResponseWriter, status int, code, text string) {
	b, _ := json.Marshal(errorFrame{Type: "error", Code: code, Text: text})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
