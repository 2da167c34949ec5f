package chat

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// decodeMeta decodes the meta of a presence entry. A users frame decodes
// the meta of every user of its room, once a second per room while the
// room changes: the form json.Marshal gives a userMeta ({"n":"…","t":…}
// with a name that needs no escape) is read directly, anything else by
// json.Unmarshal, with the same result.
func decodeMeta(b []byte) (userMeta, bool) {
	if rest, found := bytes.CutPrefix(b, []byte(`{"n":"`)); found {
		if i := bytes.IndexByte(rest, '"'); i >= 0 && plainString(rest[:i]) {
			name, tail := rest[:i], rest[i+1:]
			if len(tail) == 1 && tail[0] == '}' {
				return userMeta{Name: string(name)}, true
			}
			if num, found := bytes.CutPrefix(tail, []byte(`,"t":`)); found && len(num) > 1 && num[len(num)-1] == '}' {
				if at, ok := jsonInt(num[:len(num)-1]); ok {
					return userMeta{Name: string(name), At: at}, true
				}
			}
		}
	}
	var m userMeta // on the heap: only in this path
	err := json.Unmarshal(b, &m)
	return m, err == nil
}

// plainString reports whether s, the inside of a JSON string, is its own
// value: valid UTF-8 with no escape and no control character.
func plainString(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.Valid(s)
}

// jsonInt parses a JSON integer of at most 18 digits (no exponent, no
// leading zero), which fits an int64.
func jsonInt(s []byte) (int64, bool) {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) == 0 || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}
