package fold

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func reference(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) }

// TestCompareIsLowerCompare: Compare agrees with comparing the lowered
// strings, for ASCII, non-ASCII (the Kelvin sign lowers to ASCII "k", "İ"
// to more bytes), invalid UTF-8 and prefixes.
func TestCompareIsLowerCompare(t *testing.T) {
	pieces := []string{"", "a", "A", "b", "B", "z", "Z", "0", "_", "[", "`", "{", "m1", "M10",
		"\u212a", "k", "K", "é", "É", "İ", "i", "ß", "\xff", "\xc3", "日本"}
	r := rand.New(rand.NewPCG(1, 2))
	gen := func() string {
		var b strings.Builder
		for range r.IntN(5) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		return b.String()
	}
	for range 200000 {
		a, b := gen(), gen()
		if got, want := Compare(a, b), reference(a, b); got != want {
			t.Fatalf("Compare(%q, %q) = %d, want %d", a, b, got, want)
		}
	}
}

func TestCompareDoesNotAllocate(t *testing.T) {
	a, b := "Session-ABCdef-0123", "session-abcdeg-0123"
	if n := testing.AllocsPerRun(100, func() { _ = Compare(a, b) }); n != 0 {
		t.Errorf("Compare of ASCII strings: %v allocations, want 0", n)
	}
	if Compare(a, b) >= 0 {
		t.Errorf("Compare(%q, %q) >= 0", a, b)
	}
}
