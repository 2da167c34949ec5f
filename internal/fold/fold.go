// Package fold orders strings case-insensitively without allocating.
package fold

import (
	"strings"
	"unicode/utf8"
)

// Compare orders a and b as strings.Compare(strings.ToLower(a),
// strings.ToLower(b)) does, without making the lowered copies while both
// are ASCII up to where they differ; a sort of n strings otherwise
// allocates two copies per comparison.
func Compare(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		x, y := a[i], b[i]
		if x >= utf8.RuneSelf || y >= utf8.RuneSelf {
			// Lowering the ASCII prefix, equal so far, maps it byte by
			// byte: the rest decides.
			return strings.Compare(strings.ToLower(a[i:]), strings.ToLower(b[i:]))
		}
		x, y = lower(x), lower(y)
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) == len(b):
		return 0
	case len(a) < len(b):
		// b's tail may lower to nothing only if it is empty: every rune
		// lowers to at least one byte.
		return -1
	default:
		return 1
	}
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
