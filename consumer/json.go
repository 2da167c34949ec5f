package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// The framework's wire convention for JSON consumers (docs/protocol.md):
// a client frame is a JSON object with a string "type"; one that carries a
// "ref" gets exactly one reply, {"type":"reply","ref":…,"status":"ok",
// "data":{…}} or {"type":"reply","ref":…,"status":"error","code":…,"text":…};
// a refused frame without "ref" gets {"type":"error","code":…,"text":…};
// {"type":"ping"} is answered {"type":"pong"}. More than ErrorBudget error
// frames and error replies within ErrorWindow close the connection with 1008.

// Error codes of the convention. Applications add their own words.
const (
	CodeBadJSON     = "bad_json"     // not a JSON object with a string "type"
	CodeUnknownType = "unknown_type" // no handler for the frame's type
	CodeInvalid     = "invalid"      // the handler refused the frame's content
	CodeRateLimited = "rate_limited" // over JSON.Rate
	CodeUnavailable = "unavailable"  // the layer is down; nothing was done
)

// Error budget of a connection (see Conn.SendError).
const (
	ErrorBudget = 20
	ErrorWindow = 10 * time.Second
)

// FrameError refuses a client frame: the client gets an error reply (or an
// error frame) with Code and Text. Return one from a FrameHandler, with
// Reject.
type FrameError struct {
	Code string // a short word, e.g. "invalid"
	Text string // what to do about it, for people
}

func (e *FrameError) Error() string { return "consumer: frame refused: " + e.Code + ": " + e.Text }

// Reject returns a *FrameError that refuses a frame with code and text.
func Reject(code, text string) error { return &FrameError{Code: code, Text: text} }

// Frame is one client frame of the JSON convention.
type Frame struct {
	Type string          // its "type"
	Ref  json.RawMessage // its "ref" as sent (a string or a number), nil if none
	Body []byte          // the whole frame
}

// Decode decodes the frame into v.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Body, v); err != nil {
		return Reject(CodeBadJSON, fmt.Sprintf("a %q frame must be a JSON object of the right shape: %v", f.Type, err))
	}
	return nil
}

// FrameHandler handles client frames of one type (see Conn.HandleFrame).
// The data it returns is the reply's "data" when the frame carries a "ref"
// (nil: an empty object); without a ref it is dropped. A *FrameError
// refuses the frame (see Reject); any other error closes the connection
// with 1011, as an error from Receive does.
type FrameHandler func(ctx context.Context, c *Conn, f Frame) (data any, err error)

// HandleFrame registers the handler of client frames of type typ, replacing
// any earlier one, for a consumer that uses JSON's Receive. Like Conn.On,
// call it from the consumer's methods (Connect, usually) or handlers.
// "ping" is answered by the framework and cannot be registered.
func (c *Conn) HandleFrame(typ string, h FrameHandler) {
	fs := c.frameState()
	if fs.handlers == nil {
		fs.handlers = make(map[string]FrameHandler)
	}
	fs.handlers[typ] = h
}

// SendError sends the convention's error frame with a code and text, and
// counts it toward the connection's error budget: more than ErrorBudget
// within ErrorWindow close the connection with 1008 (policy violation).
// Call it from the consumer's methods, handlers, or a function run by Do.
func (c *Conn) SendError(code, text string) {
	c.refuse(nil, code, text)
}

// JSON is a Consumer that speaks the framework's JSON wire convention:
// OnConnect registers a handler per client frame type (Conn.HandleFrame)
// and per layer event type (Conn.On); Receive parses each frame, answers
// pings, replies to frames with a "ref", refuses bad ones with the
// convention's errors and keeps the error budget. Embed it in a consumer
// type of your own, or use it as is with its func fields; the zero value
// accepts every connection and knows only "ping".
type JSON struct {
	// OnConnect runs as Consumer.Connect; nil accepts.
	OnConnect func(ctx context.Context, c *Conn) error
	// OnDisconnect runs as Consumer.Disconnect; nil does nothing.
	OnDisconnect func(ctx context.Context, c *Conn, code StatusCode)
	// Rate is how many frames per second a connection may send (burst
	// twice that), pings included; over it a frame is refused with
	// rate_limited. Zero means no limit.
	Rate float64
}

// Connect implements Consumer.
func (j *JSON) Connect(ctx context.Context, c *Conn) error {
	if j.Rate > 0 {
		c.frameState().limiter = rate.NewLimiter(rate.Limit(j.Rate), max(1, int(2*j.Rate)))
	}
	if j.OnConnect != nil {
		return j.OnConnect(ctx, c)
	}
	return nil
}

// Disconnect implements Consumer.
func (j *JSON) Disconnect(ctx context.Context, c *Conn, code StatusCode) {
	if j.OnDisconnect != nil {
		j.OnDisconnect(ctx, c, code)
	}
}

// Receive implements Consumer: the wire convention (see JSON).
func (j *JSON) Receive(ctx context.Context, c *Conn, text []byte) error {
	return c.ReceiveFrame(ctx, text)
}

// ReceiveFrame handles one client frame by the JSON convention: what JSON's
// Receive does, for a consumer with a Receive of its own that wants the
// convention for some frames.
func (c *Conn) ReceiveFrame(ctx context.Context, text []byte) error {
	var head struct {
		Type *string         `json:"type"`
		Ref  json.RawMessage `json:"ref"`
	}
	if err := json.Unmarshal(text, &head); err != nil || head.Type == nil {
		var ref json.RawMessage
		if err == nil {
			ref = head.Ref
		}
		c.refuse(ref, CodeBadJSON, `send a JSON object with a string "type", like {"type":"ping"}`)
		return nil
	}
	ref := head.Ref
	if bytes.Equal(ref, []byte("null")) {
		ref = nil
	}
	fs := c.frameState()
	if fs.limiter != nil && !fs.limiter.Allow() {
		c.refuse(ref, CodeRateLimited, "slow down: too many frames per second; this one was not handled")
		return nil
	}
	f := Frame{Type: *head.Type, Ref: ref, Body: text}
	if f.Type == "ping" {
		return c.sendReply(pong{Type: "pong", Ref: ref})
	}
	h := fs.handlers[f.Type]
	if h == nil {
		c.refuse(ref, CodeUnknownType, fmt.Sprintf("unknown frame type %q", f.Type))
		return nil
	}
	data, err := h(ctx, c, f)
	var fe *FrameError
	switch {
	case errors.As(err, &fe):
		c.refuse(ref, fe.Code, fe.Text)
		return nil
	case err != nil:
		return err
	case ref == nil:
		return nil
	}
	if data == nil {
		data = struct{}{}
	}
	return c.sendReply(okReply{Type: "reply", Ref: ref, Status: "ok", Data: data})
}

type pong struct {
	Type string          `json:"type"`
	Ref  json.RawMessage `json:"ref,omitempty"`
}

type okReply struct {
	Type   string          `json:"type"`
	Ref    json.RawMessage `json:"ref"`
	Status string          `json:"status"`
	Data   any             `json:"data"`
}

type errorReply struct {
	Type   string          `json:"type"`
	Ref    json.RawMessage `json:"ref,omitempty"`
	Status string          `json:"status,omitempty"`
	Code   string          `json:"code"`
	Text   string          `json:"text"`
}

func (c *Conn) sendReply(v any) error {
	err := c.SendJSON(v)
	if errors.Is(err, ErrSlow) || errors.Is(err, ErrClosed) {
		return nil // closing anyway
	}
	return err
}

// refuse answers a refused frame: an error reply if it had a ref, else an
// error frame; both count toward the error budget.
func (c *Conn) refuse(ref json.RawMessage, code, text string) {
	if ref != nil {
		_ = c.sendReply(errorReply{Type: "reply", Ref: ref, Status: "error", Code: code, Text: text})
	} else {
		_ = c.sendReply(errorReply{Type: "error", Code: code, Text: text})
	}
	if c.frameState().overBudget(time.Now()) {
		c.Close(StatusPolicy, "too many errors")
	}
}

// frameState is a connection's state of the JSON convention, made on first
// use; guarded by the consumer lock (Conn.mu).
type frameState struct {
	handlers map[string]FrameHandler
	limiter  *rate.Limiter
	errors   []time.Time // when recent error frames were sent
}

func (c *Conn) frameState() *frameState {
	if c.frames == nil {
		c.frames = new(frameState)
	}
	return c.frames
}

// overBudget records an error frame sent at now and reports whether the
// connection has sent more than ErrorBudget within ErrorWindow.
func (fs *frameState) overBudget(now time.Time) bool {
	keep := fs.errors[:0]
	for _, t := range fs.errors {
		if now.Sub(t) < ErrorWindow {
			keep = append(keep, t)
		}
	}
	fs.errors = append(keep, now)
	return len(fs.errors) > ErrorBudget
}
