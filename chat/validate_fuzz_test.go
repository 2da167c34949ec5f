package chat

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

var validateSeeds = []string{
	"ann", "  Zoë  ", "", " ", "\t", "a\nb", "a/b", ".", "..", " .. ", "...", "Café ☕",
	strings.Repeat("x", 32), strings.Repeat("é", 33), strings.Repeat("y", 2001),
	"\xff", "a\u0085b", "a\u200bb", "\u00a0x\u00a0", "%2F", "a?b#c", "<b>x</b>",
}

// checkValidated checks what a validator did with s against the rules its
// doc states: it accepts exactly the trimmed strings of valid UTF-8 within
// maxLen code points that ok also accepts, returns them trimmed, accepts
// its own output unchanged, and refuses the rest with an error matching
// sentinel.
func checkValidated(t *testing.T, name string, valid func(string) (string, error), sentinel error, maxLen int, ok func(string) bool, s string) string {
	t.Helper()
	got, err := valid(s)
	trimmed := strings.TrimSpace(s)
	want := trimmed != "" && utf8.ValidString(trimmed) && utf8.RuneCountInString(trimmed) <= maxLen && ok(trimmed)
	switch {
	case want && err != nil:
		t.Fatalf("%s(%q): %v; the rules accept it", name, s, err)
	case !want && err == nil:
		t.Fatalf("%s(%q) = %q; the rules refuse it", name, s, got)
	case err != nil:
		if !errors.Is(err, sentinel) || got != "" || err.Error() == "" {
			t.Fatalf("%s(%q) = %q, %v; want \"\" and an error matching %v", name, s, got, err, sentinel)
		}
		return ""
	}
	if got != trimmed {
		t.Fatalf("%s(%q) = %q, want it trimmed: %q", name, s, got, trimmed)
	}
	if again, err := valid(got); again != got || err != nil {
		t.Fatalf("%s(%s(%q)) = %q, %v; want its own output accepted unchanged", name, name, s, again, err)
	}
	return got
}

func noControl(s string) bool { return !strings.ContainsFunc(s, unicode.IsControl) }

func FuzzValidNickname(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkValidated(t, "ValidNickname", ValidNickname, ErrBadNickname, MaxNicknameLen, noControl, s)
	})
}

// A valid room name also survives the trip through its URL: the router's
// pattern hands the handler the same name back.
func FuzzValidRoom(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s)
	}
	mux := http.NewServeMux()
	var got string
	mux.HandleFunc("/ws/chat/{room}/", func(w http.ResponseWriter, r *http.Request) { got = r.PathValue("room") })
	f.Fuzz(func(t *testing.T, s string) {
		room := checkValidated(t, "ValidRoom", ValidRoom, ErrBadRoom, MaxRoomLen, func(s string) bool {
			return noControl(s) && !strings.Contains(s, "/") && s != "." && s != ".."
		}, s)
		if room == "" {
			return
		}
		got = ""
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/ws/chat/"+url.PathEscape(room)+"/", nil))
		if w.Code != http.StatusOK || got != room {
			t.Fatalf("room %q through its URL: status %d, handler got %q", room, w.Code, got)
		}
	})
}

func FuzzValidText(f *testing.F) {
	for _, s := range validateSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkValidated(t, "ValidText", ValidText, ErrBadText, MaxTextLen, func(string) bool { return true }, s)
	})
}
