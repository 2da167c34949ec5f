package auth_test

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatterpro/chatterpro/auth"
)

// A session cookie comes from the browser, so from anyone: Decode never
// panics, refuses what it did not sign with one of its sentinel errors,
// and what Encode signed decodes to the same session, while any change to
// one byte of it is refused.
func FuzzSession(f *testing.F) {
	f.Add("", "id", "ann", int64(1_700_000_000), 3)
	f.Add("x.y", "aGVsbG8", "Zoë <b>", int64(1), 0)
	f.Add("eyJpIjoiYSIsIm4iOiJiIiwidCI6MX0.AAAA", "", "", int64(0), 10)
	f.Add("..", "id", "n\x00\n", int64(-5), 1)
	f.Add("e30.e30", "a.b", "🙂", int64(1<<40), 100)
	now := time.Unix(1_700_000_100, 0)
	s, err := auth.New(auth.Options{Secret: []byte("0123456789abcdef0123456789abcdef"), Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, value, id, nick string, issued int64, flip int) {
		sess, err := s.Decode(value)
		if err == nil {
			// Only a cookie this secret signed gets here: it must be whole.
			if sess.ID == "" || sess.Nickname == "" || sess.Issued.Unix() <= 0 {
				t.Fatalf("Decode(%q) = %+v: an incomplete session accepted", value, sess)
			}
		} else if !errors.Is(err, auth.ErrBadSession) && !errors.Is(err, auth.ErrNoSession) && !errors.Is(err, auth.ErrExpired) {
			t.Fatalf("Decode(%q): %v, not one of the package's errors", value, err)
		}

		in := auth.Session{ID: id, Nickname: nick, Issued: time.Unix(issued, 0)}
		enc, err := s.Encode(in)
		if !utf8.ValidString(id) || !utf8.ValidString(nick) {
			if err == nil {
				t.Fatalf("Encode(%+v) accepted invalid UTF-8", in)
			}
			return
		}
		if err != nil {
			t.Fatalf("Encode(%+v): %v", in, err)
		}
		out, err := s.Decode(enc)
		switch {
		case len(enc) > 4096:
			if !errors.Is(err, auth.ErrBadSession) {
				t.Fatalf("Decode of a %d-byte cookie: %v, want ErrBadSession", len(enc), err)
			}
		case id == "" || nick == "" || issued <= 0:
			if !errors.Is(err, auth.ErrBadSession) {
				t.Fatalf("Decode(Encode(%+v)) = %+v, %v; want ErrBadSession for an incomplete session", in, out, err)
			}
		case !now.Before(time.Unix(issued, 0).Add(auth.DefaultMaxAge)):
			if !errors.Is(err, auth.ErrExpired) {
				t.Fatalf("Decode(Encode(%+v)) = %+v, %v; want ErrExpired", in, out, err)
			}
		default:
			if err != nil || out.ID != id || out.Nickname != nick || !out.Issued.Equal(time.Unix(issued, 0)) {
				t.Fatalf("Decode(Encode(%+v)) = %+v, %v", in, out, err)
			}
		}
		if enc == "" {
			return
		}
		// One byte changed: refused.
		b := []byte(enc)
		i := (flip%len(b) + len(b)) % len(b)
		b[i] ^= 1 + byte(flip>>8)&0x7f
		if string(b) == enc {
			return
		}
		if got, err := s.Decode(string(b)); err == nil {
			t.Fatalf("Decode accepted %q, %q with byte %d changed: %+v", b, enc, i, got)
		}
	})
}
