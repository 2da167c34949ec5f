package chat

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestDecodeMetaIsUnmarshal: decodeMeta gives what json.Unmarshal gives,
// for the metas json.Marshal makes of any name (quotes, backslashes,
// control characters, HTML characters, invalid UTF-8, non-ASCII) and time,
// and for hand-made ones in and out of the direct form.
func TestDecodeMetaIsUnmarshal(t *testing.T) {
	check := func(b []byte) {
		t.Helper()
		var want userMeta
		wantOK := json.Unmarshal(b, &want) == nil
		got, ok := decodeMeta(b)
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("decodeMeta(%q) = %+v %v, want %+v %v", b, got, ok, want, wantOK)
		}
	}
	for _, s := range []string{
		`{"n":"ada"}`, `{"n":"ada","t":0}`, `{"n":"ada","t":-0}`, `{"n":"ada","t":-17}`,
		`{"n":"ada","t":01}`, `{"n":"ada","t":1e3}`, `{"n":"ada","t":1.5}`, `{"n":"ada","t":}`,
		`{"n":"ada","t":123456789012345678}`, `{"n":"ada","t":1234567890123456789}`,
		`{"n":"ada","t":99999999999999999999}`, `{"n":"ada","t":"5"}`, `{"n":"ada","t":5,"x":1}`,
		`{"t":5,"n":"ada"}`, `{"n":"ada",}`, `{"n":"ada"} `, `{"n":"a\"b"}`, `{"n":"a\\b"}`,
		`{"n":"\u00e9"}`, "{\"n\":\"\xff\"}", "{\"n\":\"a\tb\"}", `{"n":""}`, `{"n":"ada"`, `{"n":"ada`,
		`{"n":5}`, `{"n":null}`, `null`, ``, `{}`, `{"n":"日本","t":1733150000000}`,
	} {
		check([]byte(s))
	}
	r := rand.New(rand.NewPCG(3, 4))
	runes := []rune{'a', 'Z', '0', ' ', '"', '\\', '/', '<', '&', '\t', '\n', 0x7f, 'é', '日', 0xfffd, 0x2028}
	for range 20000 {
		var name []byte
		for range r.IntN(8) {
			if r.IntN(20) == 0 {
				name = append(name, 0xff) // invalid UTF-8
				continue
			}
			name = append(name, string(runes[r.IntN(len(runes))])...)
		}
		at := r.Int64N(4e12) - 1e12
		if r.IntN(4) == 0 {
			at = 0 // omitted
		}
		b, err := json.Marshal(userMeta{Name: string(name), At: at})
		if err != nil {
			t.Fatal(err)
		}
		check(b)
	}
}

func TestDecodeMetaAllocatesOnlyTheName(t *testing.T) {
	b, _ := json.Marshal(userMeta{Name: "Ada Lovelace", At: 1733150000000})
	if n := testing.AllocsPerRun(100, func() { _, _ = decodeMeta(b) }); n > 1 {
		t.Errorf("decodeMeta(%s): %v allocations, want at most 1 (the name)", b, n)
	}
}
