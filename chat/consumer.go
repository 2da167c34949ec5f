package chat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/presence"
)

// roomConsumer serves one chat socket: one person's tab in one room.
type roomConsumer struct {
	app     *App
	room    string
	user    *consumer.User // the scope's: never nil once Connect accepted
	joined  bool           // Connect accepted the socket
	limiter *rate.Limiter
	flight  inflight // messages handed to the layer, not yet recorded

	errMu  sync.Mutex  // fail runs on the reader and on the layer's goroutine
	errors []time.Time // when recent error frames were sent
	// marker tells this socket's typing events from the others' (see
	// typingEvent); typedAt is when the reader last forwarded one.
	marker  string
	typedAt time.Time

	shard uint8 // its counter of frames out (see frameCounter)
}

func (a *App) newConsumer() consumer.Consumer {
	rc := &roomConsumer{app: a, shard: a.metrics.out.shard()}
	if a.cfg.Rate > 0 {
		rc.limiter = rate.NewLimiter(rate.Limit(a.cfg.Rate), max(1, int(2*a.cfg.Rate)))
	}
	return rc
}

func (rc *roomConsumer) Connect(ctx context.Context, c *consumer.Conn) error {
	a := rc.app
	scope := c.Scope()
	if scope.User == nil {
		return consumer.Refuse(http.StatusForbidden, "log in first")
	}
	room, err := ValidRoom(scope.Param("room"))
	if err != nil {
		return consumer.Refuse(http.StatusBadRequest, err.Error())
	}
	rc.room, rc.user = room, scope.User
	rc.marker = newMarker()
	c.On(eventMessage, rc.forward)
	c.On(eventTyping, rc.onTyping)
	c.On(presence.DiffType, rc.onPresence)

	// Listed under the session: the tabs of one person are one user. The
	// framework keeps the entry, and ends it when the socket closes (at
	// once after 1000, after the grace period otherwise); the others learn
	// of the join from the diff it causes, the joiner from the frames below.
	// The entry and the history are two round trips to the layer: they go
	// at once (Track allows it), and a join waits for the slower only.
	tracked := make(chan error, 1)
	go func() {
		start := time.Now()
		err := c.Track(ctx, room, rc.user.Session, userMeta{Name: rc.user.Name, At: time.Now().UnixMilli()})
		a.metrics.observe("presence_track", start, err)
		tracked <- err
	}()
	since := scope.Query.Get("since")
	start := time.Now()
	rec, err := c.GroupAddSince(ctx, room, since, historyOnJoin)
	a.metrics.observe("history", start, err)
	if terr := <-tracked; terr != nil {
		return rc.unavailable(ctx, terr)
	}
	if err != nil {
		return rc.unavailable(ctx, err)
	}
	users, err := a.hub.knownUsers(ctx, room)
	if err != nil {
		return rc.unavailable(ctx, err)
	}
	a.dir.update(room, users.Count)
	rc.send(c, newHistoryFrame(rec.Messages, since != "" && !rec.Recovered))
	usersBody := rc.send(c, users)
	rc.send(c, noticeFrame{Type: "notice", Text: "Welcome to ChatterPro!", Time: now()})
	a.hub.add(room, c, frameSum(usersBody))
	rc.joined = true
	a.metrics.conns.Inc()
	return nil
}

func (rc *roomConsumer) unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err // the client went away before it joined: nobody to tell
	}
	rc.app.log.Warn("joining a room failed", "room", rc.room, "err", err)
	return consumer.Refuse(http.StatusServiceUnavailable, "chat temporarily unavailable, retry shortly")
}

// clientFrame is a frame from the browser. Fields are decoded as raw JSON
// so that a field of the wrong kind gets an answer that names it.
type clientFrame struct {
	Type   *string         `json:"type"`
	Text   *string         `json:"text"`
	CID    json.RawMessage `json:"cid"`
	Before json.RawMessage `json:"before"`
}

func (rc *roomConsumer) Receive(ctx context.Context, c *consumer.Conn, text []byte) error {
	rc.app.metrics.in.Inc()
	var f clientFrame
	if err := json.Unmarshal(text, &f); err != nil || f.Type == nil {
		rc.refuse(ctx, c, codeBadJSON, `send a JSON object like {"type":"message","text":"hi"}`)
		return nil
	}
	switch *f.Type {
	case "message":
		return rc.receiveMessage(ctx, c, f)
	case "typing":
		rc.receiveTyping(ctx, c)
		return nil
	case "older":
		rc.receiveOlder(ctx, c, f)
		return nil
	case "ping": // the framework's convention: browsers cannot see websocket pings
		rc.send(c, struct {
			Type string `json:"type"`
		}{"pong"})
		return nil
	}
	rc.refuse(ctx, c, codeUnknownType, `unknown frame type; the types are "message", "typing", "older" and "ping"`)
	return nil
}

// receiveMessage records a chat message and sends it to the room; with a
// cid, once per session and cid (see recordOnce).
func (rc *roomConsumer) receiveMessage(ctx context.Context, c *consumer.Conn, f clientFrame) error {
	a := rc.app
	cid, ok := parseCID(f.CID)
	if !ok {
		rc.refuse(ctx, c, codeBadJSON, "cid must be a string of 1 to 64 printable ASCII characters")
		return nil
	}
	if f.Text == nil {
		rc.refuse(ctx, c, codeBadText, "a message needs a text")
		return nil
	}
	msg, err := ValidText(*f.Text)
	if err != nil {
		rc.refuse(ctx, c, codeBadText, err.Error())
		return nil
	}
	if !rc.allow() {
		rc.refuse(ctx, c, codeRateLimited, "slow down: too many messages per second; this one was not sent")
		return nil
	}
	m, err := messageEvent(rc.user.Name, msg, cid, false)
	if err != nil {
		return err
	}
	if cid != "" {
		rc.recordOnce(ctx, c, cid, m)
		return nil
	}
	start := time.Now()
	rec, async := a.history.(channellayer.Recorder)
	if !async {
		_, err = a.history.GroupSendRecorded(ctx, rc.room, m)
		rc.sent(c, start, err)
		return nil
	}
	// The reader goes on to the next frame while the layer records this
	// one; a few may be under way at once.
	if err := rc.flight.waitBelow(ctx, maxInFlight); err != nil {
		return nil // closing
	}
	rc.flight.add()
	rec.GroupSendRecordedAsync(rc.room, m, func(_ channellayer.Message, err error) {
		rc.sent(c, start, err)
		rc.flight.done()
	})
	return nil
}

// recordOnce records a message with a cid: once per session and cid in the
// room, on any socket and node, while the room's history keeps it. A
// repeat is not sent again: its sender alone gets the original back. The
// socket's earlier messages are recorded first, so its messages keep their
// order.
func (rc *roomConsumer) recordOnce(ctx context.Context, c *consumer.Conn, cid string, m channellayer.Message) {
	if rc.flight.waitBelow(ctx, 1) != nil {
		return // closing
	}
	start := time.Now()
	rec, again, err := rc.app.once.GroupSendRecordedOnce(ctx, rc.room, recordKey(rc.user.Session, cid), m)
	rc.sent(c, start, err)
	if err == nil && again && c.Send(rec.Body) == nil {
		rc.app.metrics.out.add(rc.shard, 1)
	}
}

// receiveTyping forwards "is typing" to the others in the room, at most
// once per Config.TypingInterval: extra ones are dropped without an error,
// as are those over the rate limit (each forwarded one takes a token) and
// those the layer cannot send. Nothing is recorded.
func (rc *roomConsumer) receiveTyping(ctx context.Context, c *consumer.Conn) {
	a := rc.app
	now := time.Now()
	if !rc.typedAt.IsZero() && now.Sub(rc.typedAt) < a.cfg.TypingInterval {
		return
	}
	if !rc.allow() {
		return
	}
	rc.typedAt = now
	m, err := typingEvent(rc.user.Name, rc.marker)
	if err == nil {
		err = a.layer.GroupSend(ctx, rc.room, m)
		a.metrics.observe("group_send", now, err)
	}
	if err != nil {
		a.log.Debug("forwarding a typing signal failed", "room", rc.room, "err", err)
	}
}

// onTyping sends a typing event on to the client, unless it is the
// socket's own, without its marker.
func (rc *roomConsumer) onTyping(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
	f, own, ok := typingFrame(m.Body, rc.marker)
	if ok && !own && c.Send(f) == nil {
		rc.app.metrics.out.add(rc.shard, 1)
	}
	return nil
}

// receiveOlder answers a request for the messages before one the client
// has: a page of up to olderPage, oldest first.
func (rc *roomConsumer) receiveOlder(ctx context.Context, c *consumer.Conn, f clientFrame) {
	var before string
	if json.Unmarshal(f.Before, &before) != nil || !channellayer.ValidID(before) {
		rc.refuse(ctx, c, codeBadID, `"before" must be the ID of a message of the room`)
		return
	}
	if !rc.allow() {
		rc.refuse(ctx, c, codeRateLimited, "slow down: too many requests per second; ask again in a moment")
		return
	}
	start := time.Now()
	msgs, more, err := rc.app.pager.Before(ctx, rc.room, before, olderPage)
	rc.app.metrics.observe("history_before", start, err)
	switch {
	case errors.Is(err, channellayer.ErrUnknownID):
		rc.refuse(ctx, c, codeBadID, "that message is unknown or no longer kept: the room keeps nothing older")
	case err != nil:
		rc.app.log.Warn("reading older messages failed", "room", rc.room, "err", err)
		rc.refuse(ctx, c, codeUnavailable, "the chat is temporarily unavailable: older messages could not be read, try again")
	default:
		f := olderFrame{Type: "older", Messages: make([]json.RawMessage, 0, len(msgs)), More: more}
		for _, m := range msgs {
			f.Messages = append(f.Messages, m.Body)
		}
		rc.send(c, f)
	}
}

// allow takes a token of the connection's rate limit, if it has one.
func (rc *roomConsumer) allow() bool {
	return rc.limiter == nil || rc.limiter.AllowN(rc.app.clock.Now(), 1)
}

// maxInFlight is how many of one socket's messages may wait for the layer
// at once; its reader waits for the next frame beyond that.
const maxInFlight = 32

// sent reports how recording a message went; a failure tells the sender.
func (rc *roomConsumer) sent(c *consumer.Conn, start time.Time, err error) {
	a := rc.app
	a.metrics.observe("group_send_recorded", start, err)
	if err != nil {
		a.log.Warn("sending a chat message failed", "room", rc.room, "err", err)
		rc.fail(c, codeUnavailable, "the chat is temporarily unavailable: your message was not sent, try again")
	}
}

// refuse answers a frame with an error, after the socket's earlier
// messages are recorded or refused: answers keep the order of the frames.
func (rc *roomConsumer) refuse(ctx context.Context, c *consumer.Conn, code, text string) {
	if rc.flight.waitBelow(ctx, 1) == nil {
		rc.fail(c, code, text)
	}
}

// fail sends an error frame; more than maxErrors of them within
// errorWindow close the connection with 1008.
func (rc *roomConsumer) fail(c *consumer.Conn, code, text string) {
	rc.app.metrics.errors.WithLabelValues(code).Inc()
	rc.errMu.Lock()
	defer rc.errMu.Unlock()
	now := time.Now()
	keep := rc.errors[:0]
	for _, t := range rc.errors {
		if now.Sub(t) < errorWindow {
			keep = append(keep, t)
		}
	}
	rc.errors = append(keep, now)
	rc.send(c, errorFrame{Type: "error", Code: code, Text: text})
	if len(rc.errors) > maxErrors {
		c.Close(consumer.StatusPolicy, "too many errors")
	}
}

// send encodes v and sends it to c; it returns the encoded frame.
func (rc *roomConsumer) send(c *consumer.Conn, v any) (body []byte) {
	b, err := json.Marshal(v)
	if err == nil && c.Send(b) == nil {
		rc.app.metrics.out.add(rc.shard, 1)
	}
	return b
}

// forward sends a room event on to the client as it is (its body is the
// client frame, encoded once for the whole room).
func (rc *roomConsumer) forward(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
	if c.Send(m.Body) == nil {
		rc.app.metrics.out.add(rc.shard, 1)
	}
	return nil
}

// onPresence turns a presence diff of the room into join and leave notices
// about the others, and asks for the next users frame.
func (rc *roomConsumer) onPresence(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
	for _, n := range rc.app.hub.diffed(rc.room, m) {
		if n.session != rc.user.Session && c.Send(n.body) == nil {
			rc.app.metrics.out.add(rc.shard, 1)
		}
	}
	return nil
}

// Disconnect lets the socket's last messages be recorded before its
// presence ends (the framework ends it after Disconnect, which starts the
// "has left" of the last socket of a session).
func (rc *roomConsumer) Disconnect(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) {
	if !rc.joined {
		return
	}
	_ = rc.flight.waitBelow(ctx, 1)
	rc.app.hub.remove(rc.room, c)
	// The room's next flush recounts it (and its directory entry) after the
	// framework has ended this socket's presence, which comes right after
	// Disconnect: a join and a leave quicker than one diff interval cause no
	// diff, and the count must still come back down.
	rc.app.hub.markDirty(rc.room)
	rc.app.metrics.conns.Dec()
}
