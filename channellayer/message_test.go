package channellayer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
)

func TestNewMessageRefusesItsOwnType(t *testing.T) {
	tests := []struct {
		name    string
		v       any
		wantErr bool
	}{
		{"map with type", map[string]any{"type": "evil", "x": 1}, true},
		{"struct with type", struct {
			Type string `json:"type"`
		}{"evil"}, true},
		{"raw with escaped key", json.RawMessage(`{"a":1,"\u0074ype":"evil"}`), true},
		{"raw with all of the key escaped", json.RawMessage(`{"\u0074\u0079\u0070\u0065":"evil"}`), true},
		{"struct with an untagged Type", struct{ Type string }{"evil"}, true},
		{"text with characters JSON escapes", map[string]any{"text": "<b>type</b> & \"type\":1"}, false},
		{"type only in an array", map[string]any{"list": []any{map[string]any{"type": "ok"}, "type"}}, false},
		{"type as a value", map[string]any{"text": "type"}, false},
		{"type in a nested object", map[string]any{"inner": map[string]any{"type": "ok"}}, false},
		{"typed key prefix", map[string]any{"types": 1}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := channellayer.NewMessage("notify", tt.v)
			if tt.wantErr {
				if !errors.Is(err, channellayer.ErrInvalid) {
					t.Fatalf("NewMessage = %s, %v; want ErrInvalid", m.Body, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewMessage: %v", err)
			}
			p, err := channellayer.ParseMessage(m.Body)
			if err != nil || p.Type != "notify" {
				t.Fatalf("ParseMessage(%s) = %q, %v; want type notify", m.Body, p.Type, err)
			}
		})
	}
}

// hasTypeField sees a key as decoders do, whatever the values around it
// hold, and reads only the top level.
func TestHasTypeField(t *testing.T) {
	tests := []struct {
		name string
		body string
		want bool
	}{
		{"plain key", `{"type":"x"}`, true},
		{"plain key last", `{"a":1,"b":"c","type":2}`, true},
		{"escaped key", `{"\u0074ype":1}`, true},
		{"escaped in upper-case hex", `{"typ\u0045":1}`, true},
		{"other case", `{"a":1,"TyPe":1}`, true},
		{"whitespace everywhere", " \t\r\n{ \n\"a\" : [ 1 , 2 ] ,\t\"type\"\r: null }\n", true},
		{"after escaped values", `{"text":"\u003cb\u003ehi\u003c/b\u003e \u0026","type":1}`, true},
		{"after a value with an escaped quote", `{"a":"\"type\":","type":1}`, true},
		{"after a nested object", `{"a":{"b":{"type":1}},"type":1}`, true},
		{"after an array", `{"a":[{"type":1},["type"]],"type":1}`, true},
		{"after scalars", `{"a":-1.5e3,"b":true,"c":false,"d":null,"type":1}`, true},
		{"empty object", `{}`, false},
		{"only nested", `{"inner":{"type":"ok"}}`, false},
		{"only in an array", `{"list":[{"type":"ok"},"type"]}`, false},
		{"only in a string value", `{"text":"type","more":"\"type\":1"}`, false},
		{"values with escapes", `{"text":"\u003cb\u003e \u0026 \u2028"}`, false},
		{"a key with a brace in it", `{"{":1,"}":{"type":1}}`, false},
		{"longer key", `{"types":1,"typ":2,"ttype":3}`, false},
		{"escaped longer key", `{"\u0074ypes":1}`, false},
		{"escape of a non-letter", `{"typ\n":1,"\"type":2}`, false},
		{"non-ASCII escape", `{"\u0174ype":1}`, false},
		{"escaped backslash", `{"\\type":1}`, false},
		{"not an object", `["type"]`, false},
		{"a string", `"type"`, false},
		{"empty", ``, false},
		{"unterminated", `{"a":"type`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := channellayer.HasTypeField([]byte(tt.body)); got != tt.want {
				t.Fatalf("HasTypeField(%s) = %v, want %v", tt.body, got, tt.want)
			}
			if json.Valid([]byte(tt.body)) {
				if ref := refHasTypeField(t, tt.body); ref != tt.want {
					t.Fatalf("the case is wrong: encoding/json reads a type key in %s: %v", tt.body, ref)
				}
			}
		})
	}
}

// The check runs on every message built: it allocates nothing, even on a
// body whose text encoding/json escaped.
func TestHasTypeFieldAllocs(t *testing.T) {
	body := []byte(`{"user":"ann","text":"\u003cb\u003ebold\u003c/b\u003e \u0026 more","list":[{"type":1}],"Typ\u0065":1}`)
	var got bool
	if n := testing.AllocsPerRun(100, func() { got = channellayer.HasTypeField(body) }); n != 0 {
		t.Fatalf("HasTypeField allocates %v times per run, want 0", n)
	}
	if !got {
		t.Fatalf("HasTypeField(%s) = false, want true", body)
	}
}

// refHasTypeField is what hasTypeField must agree with: whether
// encoding/json, decoding body into a struct with a "type" field, sets it
// from a top-level key.
func refHasTypeField(t testing.TB, body string) bool {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("reading a key of %q: %v", body, err)
		}
		if strings.EqualFold(k.(string), "type") {
			return true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("reading a value of %q: %v", body, err)
		}
	}
	return false
}

// BenchmarkNewMessage builds a chat message whose text holds characters
// encoding/json escapes (<, >, &): the common case on the hot path. The
// check for a "type" field of its own must not decode the payload.
func BenchmarkNewMessage(b *testing.B) {
	v := struct {
		User string `json:"user"`
		Text string `json:"text"`
		Time string `json:"time"`
	}{"ann", "look: <b>bold</b> & more", "2026-01-02T03:04:05Z"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := channellayer.NewMessage("message", v); err != nil {
			b.Fatal(err)
		}
	}
}
