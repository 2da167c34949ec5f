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
// have a "type" field of its own, in any letter case ("Type" too, since
// encoding/json matches field names that way): the body would carry two,
// and decoders disagree on which wins (ParseMessage and browsers take the
// last, dispatch the first), so NewMessage refuses it with ErrInvalid.
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
// key that decoders read as "type": "type" itself, spelt with escapes
// ("\u0074ype") or in another case ("Type", which encoding/json, and so
// ParseMessage, matches to the type field). It scans the object's keys
// once, skipping values without decoding them, and allocates nothing:
// NewMessage runs it on every message. Anything but an object reports
// false (newMessage refuses it).
func hasTypeField(b []byte) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return false // '}' or not JSON
		}
		end, escaped := skipString(b, i)
		if end < 0 {
			return false
		}
		if isTypeKey(b[i+1:end-1], escaped) {
			return true
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		if i = skipValue(b, skipSpace(b, i+1)); i < 0 {
			return false
		}
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ',' {
			return false
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that opens at b[i] (a
// quote), or -1 if it does not end, and whether it holds an escape.
func skipString(b []byte, i int) (end int, escaped bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++ // the escaped byte; a \uXXXX's digits need no care
		case '"':
			return i + 1, escaped
		}
	}
	return -1, escaped
}

// skipValue returns the index after the value that starts at b[i], or -1
// if it does not end. Nested objects and arrays are skipped by counting
// brackets outside strings: the input is encoding/json's output, so they
// match.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := skipString(b, i)
		return end
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end, _ := skipString(b, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	// A number, true, false or null.
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// isTypeKey reports whether the raw contents of a key (between its quotes)
// decode to "type" in any case.
func isTypeKey(raw []byte, escaped bool) bool {
	const want = "type"
	if !escaped {
		return len(raw) == len(want) && asciiEqualFold(raw, want)
	}
	if len(raw) > len(want)*len(`\u0000`) {
		return false
	}
	n := 0 // bytes of want matched
	for i := 0; i < len(raw); n++ {
		if n == len(want) {
			return false
		}
		c := raw[i]
		i++
		if c == '\\' {
			// Only \uXXXX can stand for a letter; \n, \" and the like cannot.
			if i+5 > len(raw) || raw[i] != 'u' {
				return false
			}
			r := 0
			for _, h := range raw[i+1 : i+5] {
				d := hexValue(h)
				if d < 0 {
					return false
				}
				r = r<<4 | d
			}
			if r >= utf8.RuneSelf {
				return false
			}
			c = byte(r)
			i += 5
		}
		if lower(c) != want[n] {
			return false
		}
	}
	return n == len(want)
}

func hexValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func asciiEqualFold(b []byte, s string) bool {
	for i := range b {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
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
