package chat

import (
	"errors"
	"strings"
	"testing"
)

type validCase struct {
	name    string
	in      string
	want    string // trimmed result when valid
	wantErr string // substring of the error sentence; "" means valid
}

func runValid(t *testing.T, fn func(string) (string, error), sentinel error, tests []validCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fn(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("(%q) error %v, want valid", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("(%q) = %q, want %q", tt.in, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("(%q) = %q, want error containing %q", tt.in, got, tt.wantErr)
			}
			if !errors.Is(err, sentinel) {
				t.Errorf("error %v does not match %v", err, sentinel)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if got != "" {
				t.Errorf("result on error = %q, want empty", got)
			}
			if msg := err.Error(); !strings.HasSuffix(msg, ".") || strings.HasPrefix(msg, "chat:") {
				t.Errorf("error %q is not a sentence for the user", msg)
			}
		})
	}
}

func TestValidNickname(t *testing.T) {
	runValid(t, ValidNickname, ErrBadNickname, []validCase{
		{"simple", "alice", "alice", ""},
		{"trimmed", "  bob \t\n", "bob", ""},
		{"inner space", "Mary Jane", "Mary Jane", ""},
		{"unicode", "Zoë 🦊", "Zoë 🦊", ""},
		{"html is just text", "<b>x</b>", "<b>x</b>", ""},
		{"one rune", "x", "x", ""},
		{"32 runes", strings.Repeat("é", 32), strings.Repeat("é", 32), ""},
		{"32 runes after trim", "  " + strings.Repeat("a", 32) + "  ", strings.Repeat("a", 32), ""},
		{"empty", "", "", "enter a nickname"},
		{"whitespace only", " \t\n ", "", "enter a nickname"},
		{"33 runes", strings.Repeat("é", 33), "", "at most 32"},
		{"33 emoji", strings.Repeat("🦊", 33), "", "at most 32"},
		{"tab inside", "a\tb", "", "control characters"},
		{"newline inside", "a\nb", "", "control characters"},
		{"NUL", "a\x00b", "", "control characters"},
		{"DEL", "a\x7fb", "", "control characters"},
		{"C1 control", "a\u0085b", "", "control characters"},
		{"invalid utf-8", "a\xffb", "", "invalid characters"},
	})
}

func TestValidRoom(t *testing.T) {
	runValid(t, ValidRoom, ErrBadRoom, []validCase{
		{"simple", "Chat Room", "Chat Room", ""},
		{"trimmed", "  Gaming Room ", "Gaming Room", ""},
		{"unicode", "Café ☕ 日本", "Café ☕ 日本", ""},
		{"specials", "a?b#c%d&e+f", "a?b#c%d&e+f", ""},
		{"64 runes", strings.Repeat("ü", 64), strings.Repeat("ü", 64), ""},
		{"empty", "", "", "choose a room"},
		{"whitespace only", "   ", "", "choose a room"},
		{"65 runes", strings.Repeat("ü", 65), "", "at most 64"},
		{"slash", "a/b", "", "slash"},
		{"leading slash", "/x", "", "slash"},
		{"dot", ".", "", "dots"},
		{"dot dot", " .. ", "", "dots"},
		{"three dots are fine", "...", "...", ""},
		{"control character", "a\x01b", "", "control characters"},
		{"newline", "a\nb", "", "control characters"},
		{"invalid utf-8", "\xc3\x28", "", "invalid characters"},
	})
}

func TestValidText(t *testing.T) {
	runValid(t, ValidText, ErrBadText, []validCase{
		{"simple", "hello", "hello", ""},
		{"trimmed", "  hi there \n", "hi there", ""},
		{"line breaks inside", "a\nb", "a\nb", ""},
		{"html is just text", "<script>alert(1)</script>", "<script>alert(1)</script>", ""},
		{"2000 code points", strings.Repeat("€", 2000), strings.Repeat("€", 2000), ""},
		{"2000 emoji", strings.Repeat("😀", 2000), strings.Repeat("😀", 2000), ""},
		{"empty", "", "", "empty"},
		{"whitespace only", " \n\t ", "", "empty"},
		{"2001 code points", strings.Repeat("a", 2001), "", "at most 2000"},
		{"invalid utf-8", "\xff", "", "invalid characters"},
	})
}
