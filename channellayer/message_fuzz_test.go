package channellayer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/chatterpro/chatterpro/channellayer"
)

// History IDs come from strangers (a client's "since"): ValidID accepts
// exactly "<digits>-<digits>" with both parts within uint64, and CompareID
// is a consistent order on any strings.
func FuzzID(f *testing.F) {
	for _, seed := range [][2]string{
		{"1-0", "1-1"}, {"1700000000000-5", "1700000000000-5"}, {"01-1", "1-1"},
		{"", "-"}, {"1-", "-1"}, {"18446744073709551615-18446744073709551615", "18446744073709551616-0"},
		{"+1-2", "1-+2"}, {"1-2-3", "0x1-2"}, {" 1-2", "1-2\n"}, {"abc", "1-0"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, s := range []string{a, b} {
			if got, want := channellayer.ValidID(s), idShape(s); got != want {
				t.Fatalf("ValidID(%q) = %v, want %v", s, got, want)
			}
			if c := channellayer.CompareID(s, s); c != 0 {
				t.Fatalf("CompareID(%q, itself) = %d", s, c)
			}
		}
		ab, ba := channellayer.CompareID(a, b), channellayer.CompareID(b, a)
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("CompareID(%q, %q) = %d but CompareID(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		va, vb := channellayer.ValidID(a), channellayer.ValidID(b)
		switch {
		case va && !vb && ab != 1, !va && vb && ab != -1:
			t.Fatalf("CompareID(%q, %q) = %d: a malformed ID must sort before every valid one", a, b, ab)
		case va && vb:
			x, y := idNumbers(a), idNumbers(b)
			want := 0
			if x[0] < y[0] || x[0] == y[0] && x[1] < y[1] {
				want = -1
			} else if x != y {
				want = 1
			}
			if ab != want {
				t.Fatalf("CompareID(%q, %q) = %d, want %d", a, b, ab, want)
			}
		}
	})
}

// idShape is the documented shape of a history ID, checked by hand.
func idShape(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	return ok && digits(ms) && digits(seq) && fits(ms) && fits(seq)
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func fits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func idNumbers(s string) [2]uint64 {
	a, b, _ := strings.Cut(s, "-")
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return [2]uint64{x, y}
}

// ParseMessage reads what another process published: it never panics,
// accepts exactly the JSON objects with a non-empty string "type", and
// keeps the body as it is. A message NewMessage built parses back to the
// same type, with its fields intact.
func FuzzMessage(f *testing.F) {
	f.Add(`{"type":"chat","text":"hi"}`, "chat", "text", "hi")
	f.Add(`{"type":""}`, "notice", "", "")
	f.Add(`{"id":"1-2","type":"message","user":"ann"}`, "message", "user", "ann")
	f.Add(`[1,2]`, "x", "type", "shadow")
	f.Add(`{"type":1}`, "ü\n\"", "Type", "case")
	f.Add(`null`, "t", "id", "1-2")
	f.Add(`{"type":"a","type":"b"}`, "a", "TYPE", "b")
	f.Add(`{"\u0074ype":"b"}`, "a", "type", "<b>")
	f.Add(`{"text":"\u003cb\u003e","Type":"b"}`, "message", "text", "<b>type</b> & \"type\":1")
	f.Fuzz(func(t *testing.T, body, typ, key, value string) {
		m, err := channellayer.ParseMessage([]byte(body))
		var head struct {
			Type *string `json:"type"`
		}
		if json.Unmarshal([]byte(body), &head) == nil && head.Type != nil && *head.Type != "" {
			if err != nil {
				t.Fatalf("ParseMessage(%q): %v; want it accepted", body, err)
			}
			if m.Type != *head.Type || string(m.Body) != body {
				t.Fatalf("ParseMessage(%q) = %q, %q", body, m.Type, m.Body)
			}
		} else if err == nil {
			t.Fatalf("ParseMessage(%q) accepted a body without a string type: %+v", body, m)
		}

		fields := map[string]string{}
		if key != "" {
			fields[key] = value
		}
		nm, err := channellayer.NewMessage(typ, fields)
		if typ == "" || !utf8.ValidString(typ) {
			if !errors.Is(err, channellayer.ErrInvalid) {
				t.Fatalf("NewMessage(%q): %v, want ErrInvalid for a type that is empty or not UTF-8", typ, err)
			}
			return
		}
		if strings.EqualFold(key, "type") { // ParseMessage would read the type from it
			if !errors.Is(err, channellayer.ErrInvalid) {
				t.Fatalf("NewMessage(%q, %v) = %q, %v; want ErrInvalid for a type field of its own", typ, fields, nm.Body, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("NewMessage(%q, %v): %v", typ, fields, err)
		}
		if !json.Valid(nm.Body) {
			t.Fatalf("NewMessage(%q, %v) built invalid JSON %q", typ, fields, nm.Body)
		}
		back, err := channellayer.ParseMessage(nm.Body)
		if err != nil || back.Type != typ || !bytes.Equal(back.Body, nm.Body) {
			t.Fatalf("NewMessage(%q, %v) = %q parses back as %q, %v", typ, fields, nm.Body, back.Type, err)
		}
		var got map[string]string
		if err := back.Decode(&got); err != nil {
			t.Fatalf("decoding %q: %v", nm.Body, err)
		}
		for k, v := range fields {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				continue // encoding/json writes invalid UTF-8 as U+FFFD
			}
			if got[k] != v {
				t.Fatalf("field %q of %q = %q, want %q", k, nm.Body, got[k], v)
			}
		}
		// A recorded copy: "id" first, the rest unchanged.
		if channellayer.ValidID(value) {
			withID := channellayer.WithID(nm.Body, value)
			rec, err := channellayer.ParseMessage(withID)
			if err != nil || rec.Type != typ || rec.ID != value || !json.Valid(withID) {
				t.Fatalf("WithID(%q, %q) = %q: type %q, id %q, %v", nm.Body, value, withID, rec.Type, rec.ID, err)
			}
		}
	})
}

// NewMessage's check for a "type" field of its own agrees with
// encoding/json on every JSON object: it sees a top-level key that
// decodes to "type" in any case, and nothing else.
func FuzzHasTypeField(f *testing.F) {
	for _, seed := range []string{
		`{"type":1}`, `{"\u0074ype":1}`, `{"TYPE":1}`, `{"a":{"type":1}}`, `{"a":["type",{"type":1}]}`,
		`{"text":"\u003cb\u003e \"type\":1 \u0026"}`, ` { "a" : [ 1 , 2 ] , "type" : null } `,
		`{"\\type":1}`, `{"typ\u0065s":1}`, `{"\u0174ype":1}`, `["type"]`, `{}`, `{"a":-1e5,"b":true,"Type":false}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got := channellayer.HasTypeField([]byte(body)) // must not panic on anything
		if !json.Valid([]byte(body)) {
			return
		}
		if want := refHasTypeField(t, body); got != want {
			t.Fatalf("HasTypeField(%q) = %v, encoding/json says %v", body, got, want)
		}
	})
}

// An envelope on pub/sub parses back to what was sent, whatever the type
// and body hold; anything else read from Redis is refused or parsed
// without panicking.
func FuzzEnvelope(f *testing.F) {
	f.Add("proc.abc!1", "1-2", "chat", `{"type":"chat"}`, "x\n\n4\nchat{}")
	f.Add("", "", "a\nb", "{}", "\n\n1\nx")
	f.Add("t", "!1-2", "type", "{\"a\":\"\\n\"}", "t\n!1-2\n-1\nx")
	f.Add("t", "*", "ü", "{", "t\n\n99999999999999999999\nx")
	f.Fuzz(func(t *testing.T, target, id, typ, body, raw string) {
		if target0, m, _, ok := channellayer.ParseEnvelope(raw); ok {
			if strings.Contains(target0, "\n") || m.Type == "" || len(m.Body) == 0 {
				t.Fatalf("ParseEnvelope(%q) = %q, %+v: a part it must not accept", raw, target0, m)
			}
		}
		if strings.Contains(target, "\n") || strings.Contains(id, "\n") || typ == "" || body == "" {
			return // not what the layer sends: channel names and IDs have no line breaks, messages a type and a body
		}
		m := channellayer.Message{Type: typ, ID: id, Body: []byte(body)}
		p := channellayer.Envelope(target, m)
		gotTarget, got, recorded, ok := channellayer.ParseEnvelope(p)
		wantID := id
		if strings.HasPrefix(id, "!") || strings.HasPrefix(id, "*") {
			wantID = "" // the marks of recorded messages are not sent on
		}
		if !ok || gotTarget != target || got.Type != typ || got.ID != wantID || recorded || string(got.Body) != body {
			t.Fatalf("Envelope(%q, %+v) = %q parses back as %q, %+v, recorded %v, ok %v", target, m, p, gotTarget, got, recorded, ok)
		}
	})
}

// A recorded envelope as the record script publishes it parses back to its
// messages; anything else is refused or parsed without panicking, and
// what is delivered from it is exactly what it says.
func FuzzParseRecorded(f *testing.F) {
	f.Add("\n*\n1-1\n4\n15\nchat{\"id\":\"1-1\"}", "1-2", "chat", `{"id":"1-2","text":"hi"}`)
	f.Add("\n*", "", "x", "{}")
	f.Add("\n*\n1-1\n-1\n2\nab", "1-3", "t\nt", "{\n}")
	f.Add("\n*\n\n1\n1\nab\n1-2\n1\n99\nc", "9-9", "ü", "{}")
	f.Add("\n*\n1-1\n+1\n+1\nab", "0-0", "a", "b")
	f.Fuzz(func(t *testing.T, raw, id, typ, body string) {
		msgs, ok := channellayer.ParseRecorded(raw)
		if !strings.HasPrefix(raw, "\n*") && (ok || len(msgs) > 0) {
			t.Fatalf("ParseRecorded(%q) took a payload without the mark: %v, %v", raw, msgs, ok)
		}
		for _, m := range msgs {
			if m.Type == "" || len(m.Body) == 0 || !strings.Contains(raw, m.Type+string(m.Body)) {
				t.Fatalf("ParseRecorded(%q) delivered %+v, not a part of it", raw, m)
			}
		}
		if strings.Contains(id, "\n") || typ == "" || body == "" {
			return // the script's IDs have no line breaks; types and bodies are never empty
		}
		want := []channellayer.Message{{Type: typ, ID: id, Body: []byte(body)}, {Type: "second", ID: "0-1", Body: []byte("{}")}}
		p := "\n*"
		for _, m := range want {
			p += "\n" + m.ID + "\n" + strconv.Itoa(len(m.Type)) + "\n" + strconv.Itoa(len(m.Body)) + "\n" + m.Type + string(m.Body)
		}
		got, ok := channellayer.ParseRecorded(p)
		if !ok || len(got) != len(want) {
			t.Fatalf("ParseRecorded(%q) = %+v, %v; want %d messages", p, got, ok, len(want))
		}
		for i := range want {
			if got[i].Type != want[i].Type || got[i].ID != want[i].ID || !bytes.Equal(got[i].Body, want[i].Body) {
				t.Fatalf("ParseRecorded(%q) message %d = %+v, want %+v", p, i, got[i], want[i])
			}
		}
	})
}

// A history entry read back from a Redis stream becomes a message only
// when it holds a type and an object body; its body then carries the
// entry's ID first and still parses to the same type, with every field
// of the stored body.
func FuzzStreamMessage(f *testing.F) {
	f.Add("1-1", "chat", `{"type":"chat","text":"hi"}`)
	f.Add("1-2", "", `{}`)
	f.Add("", "t", `{ }`)
	f.Add("9-9", "t", `[]`)
	f.Add("1-1", "t", `{"id":"0-0","type":"t"}`)
	f.Add("1-1", "t", `{`)
	f.Fuzz(func(t *testing.T, id, typ, body string) {
		m, ok := channellayer.StreamMessage(id, map[string]any{"t": typ, "d": body})
		if !ok {
			if typ != "" && body != "" && body[0] == '{' {
				t.Fatalf("entry %q %q %q refused", id, typ, body)
			}
			return
		}
		if typ == "" || body == "" || body[0] != '{' || m.Type != typ || m.ID != id {
			t.Fatalf("entry %q %q %q read as %+v", id, typ, body, m)
		}
		var stored map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &stored) != nil || !channellayer.ValidID(id) || strings.ContainsAny(id, `"\`) {
			return // not what the layer writes: no more to promise
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(m.Body, &got); err != nil {
			t.Fatalf("entry %q %q %q: body %q is not JSON: %v", id, typ, body, m.Body, err)
		}
		if string(got["id"]) != strconv.Quote(id) && stored["id"] == nil {
			t.Fatalf("entry %q: body %q does not carry its ID", id, m.Body)
		}
		for k, v := range stored {
			if k != "id" && !bytes.Equal(got[k], v) && !duplicateKey(body, k) {
				t.Fatalf("entry %q %q: field %q = %s, stored %s", id, body, k, got[k], v)
			}
		}
	})
}

// duplicateKey reports whether key occurs more than once in the object
// body (encoding/json keeps the last), when comparing is pointless.
func duplicateKey(body, key string) bool {
	return strings.Count(body, strconv.Quote(key)) > 1
}
