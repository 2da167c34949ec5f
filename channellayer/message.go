package channellayer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Message is what travels on a layer: a JSON object whose "type" field routes
// it to a consumer's handler. Body is the whole encoded object. A group send
// encodes it once and hands the same bytes to every member, so Body must
// never be modified after the message is built.
type Message struct {
	// Type is the "type" field of Body, for dispatch without decoding.
	Type string
	// ID is the history ID of a recorded message, else empty.
	ID string
	// Body is the encoded JSON object, "type" (and "id" if recorded) included.
	Body []byte
	// Group is the group a received message was sent to, set by the layer
	// on delivery; empty for a directed Send and for messages being sent.
	Group string
}

// NewMessage encodes v, which must encode as a JSON object, into a message of
// the given type; a "type" field is added first. The type must be
// non-empty valid UTF-8, so that the body says the same type. v must not
// have a "type" field of its own: the body would carry two, and decoders
// disagree on which wins (ParseMessage and browsers take the last, dispatch
// the first), so NewMessage refuses it with ErrInvalid.
func NewMessage(typ string, v any) (Message, error) {
	if typ == "" {
		return Message{}, fmt.Errorf("%w: message type is empty", ErrInvalid)
	}
	if !utf8.ValidString(typ) {
		// JSON would carry it as U+FFFD: other processes would read
		// another type than this one's Message.Type.
		return Message{}, fmt.Errorf("%w: message type %q is not valid UTF-8", ErrInvalid, typ)
	}
	var fields []byte
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return Message{}, fmt.Errorf("channellayer: encoding %q message: %w", typ, err)
		}
		fields = b
	}
	if hasTypeField(fields) {
		return Message{}, fmt.Errorf("%w: the body of a %q message has a \"type\" field of its own; remove it (the type is NewMessage's first argument)", ErrInvalid, typ)
	}
	return newMessage(typ, fields)
}

// hasTypeField reports whether the encoded JSON object b has a top-level
// "type" key. Most bodies do not mention "type" at all, and are not decoded.
func hasTypeField(b []byte) bool {
	if !bytes.Contains(b, []byte(`"type"`)) && !bytes.Contains(b, []byte(`\u`)) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		if k == "type" {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

func newMessage(typ string, fields []byte) (Message, error) {
	fields = bytes.TrimSpace(fields)
	if len(fields) == 0 || bytes.Equal(fields, []byte("null")) {
		fields = []byte("{}")
	}
	if fields[0] != '{' {
		return Message{}, fmt.Errorf("%w: %q message body must be a JSON object", ErrInvalid, typ)
	}
	t, _ := json.Marshal(typ)
	body := make([]byte, 0, len(fields)+len(t)+10)
	body = append(body, `{"type":`...)
	body = append(body, t...)
	if rest := bytes.TrimSpace(fields[1:]); len(rest) > 0 && rest[0] != '}' {
		body = append(body, ',')
	}
	body = append(body, fields[1:]...)
	return Message{Type: typ, Body: body}, nil
}

// ParseMessage reads a message from an encoded JSON object with a string
// "type" field.
func ParseMessage(body []byte) (Message, error) {
	var head struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return Message{}, fmt.Errorf("%w: message is not a JSON object: %v", ErrInvalid, err)
	}
	if head.Type == "" {
		return Message{}, fmt.Errorf("%w: message has no \"type\"", ErrInvalid)
	}
	return Message{Type: head.Type, ID: head.ID, Body: body}, nil
}

// Decode decodes the message body into v.
func (m Message) Decode(v any) error {
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("channellayer: decoding %q message: %w", m.Type, err)
	}
	return nil
}

// withID returns the body with "id":id inserted as its first field.
func withID(body []byte, id string) []byte {
	out := make([]byte, 0, len(body)+len(id)+8)
	out = append(out, `{"id":"`...)
	out = append(out, id...)
	out = append(out, '"')
	if rest := bytes.TrimSpace(body[1:]); len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, body[1:]...)
}

// streamID is a history ID: milliseconds and a sequence, as "ms-seq" (the
// shape of a Redis stream ID, which the Redis backend uses as is).
type streamID struct{ ms, seq uint64 }

func parseID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return streamID{}, false
	}
	return streamID{ms, seq}, true
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id streamID) less(o streamID) bool {
	return id.ms < o.ms || (id.ms == o.ms && id.seq < o.seq)
}

// CompareID orders two history IDs of the same group: -1 if a was recorded
// before b, +1 if after, 0 if equal. A malformed ID sorts before every valid one.
func CompareID(a, b string) int {
	x, okA := parseID(a)
	y, okB := parseID(b)
	switch {
	case !okA && !okB:
		return strings.Compare(a, b)
	case !okA:
		return -1
	case !okB:
		return 1
	case x.less(y):
		return -1
	case y.less(x):
		return 1
	}
	return 0
}

// ValidID reports whether s has the shape of a history ID.
func ValidID(s string) bool {
	_, ok := parseID(s)
	return ok
}
