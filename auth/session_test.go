package auth_test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func newSessions(t *testing.T, opts auth.Options) *auth.Sessions {
	t.Helper()
	if opts.Secret == nil {
		opts.Secret = secret
	}
	s, err := auth.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// login runs Login on a recorder and returns the cookie it set.
func login(t *testing.T, s *auth.Sessions, r *http.Request, nick string) (auth.Session, *http.Cookie) {
	t.Helper()
	if r == nil {
		r = httptest.NewRequest(http.MethodPost, "/join", nil)
	}
	w := httptest.NewRecorder()
	sess, err := s.Login(w, r, nick)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("Login set %d cookies, want 1", len(cookies))
	}
	return sess, cookies[0]
}

func requestWith(c *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/chat/x", nil)
	if c != nil {
		r.AddCookie(c)
	}
	return r
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		opts    auth.Options
		wantErr bool
	}{
		{"no secret", auth.Options{}, true},
		{"short secret", auth.Options{Secret: []byte("0123456789abcde")}, true},
		{"negative max age", auth.Options{Secret: secret, MaxAge: -time.Second}, true},
		{"16 bytes", auth.Options{Secret: []byte("0123456789abcdef")}, false},
		{"all set", auth.Options{Secret: secret, MaxAge: time.Hour, CookieName: "s"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.New(tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if _, err := auth.New(auth.Options{Secret: []byte("x")}); !errors.Is(err, auth.ErrSecretTooShort) {
		t.Errorf("short secret err = %v, want ErrSecretTooShort", err)
	}
}

func TestDefaults(t *testing.T) {
	s := newSessions(t, auth.Options{})
	if s.CookieName() != "chatterpro_session" {
		t.Errorf("CookieName = %q", s.CookieName())
	}
	if s.MaxAge() != 24*time.Hour {
		t.Errorf("MaxAge = %v", s.MaxAge())
	}
}

func TestRoundTrip(t *testing.T) {
	nicks := []struct{ name, nick string }{
		{"ascii", "alice"},
		{"unicode", "Zoë 🦊 日本"},
		{"json and cookie specials", `a"b;c,d e\f=.g`},
		{"html", "<script>alert(1)</script>"},
		{"32 runes", strings.Repeat("ä", 32)},
	}
	s := newSessions(t, auth.Options{})
	for _, tt := range nicks {
		t.Run(tt.name, func(t *testing.T) {
			sess, c := login(t, s, nil, tt.nick)
			if sess.Nickname != tt.nick {
				t.Errorf("Login nickname = %q", sess.Nickname)
			}
			if len(sess.ID) != 22 || strings.ContainsAny(sess.ID, "+/=") {
				t.Errorf("ID %q is not 128 bits of base64url", sess.ID)
			}
			got, err := s.FromRequest(requestWith(c))
			if err != nil {
				t.Fatalf("FromRequest: %v", err)
			}
			if got.ID != sess.ID || got.Nickname != tt.nick || !got.Issued.Equal(sess.Issued) {
				t.Errorf("FromRequest = %+v, want %+v", got, sess)
			}
		})
	}
}

func TestFreshIDs(t *testing.T) {
	s := newSessions(t, auth.Options{})
	seen := map[string]bool{}
	for range 100 {
		sess, _ := login(t, s, nil, "bob")
		if seen[sess.ID] {
			t.Fatalf("ID %q issued twice", sess.ID)
		}
		seen[sess.ID] = true
	}
}

func TestOtherNodeSameSecret(t *testing.T) {
	a := newSessions(t, auth.Options{})
	b := newSessions(t, auth.Options{})
	sess, c := login(t, a, nil, "carol")
	got, err := b.FromRequest(requestWith(c))
	if err != nil || got.ID != sess.ID {
		t.Fatalf("other node: %+v, %v", got, err)
	}
}

func TestFromRequestErrors(t *testing.T) {
	now := time.Now()
	s := newSessions(t, auth.Options{Now: func() time.Time { return now }})
	_, good := login(t, s, nil, "dave")
	payload, sig, _ := strings.Cut(good.Value, ".")

	other := newSessions(t, auth.Options{Secret: []byte("another secret, 16+ bytes")})
	_, otherCookie := login(t, other, nil, "dave")

	past := newSessions(t, auth.Options{Now: func() time.Time { return now.Add(-25 * time.Hour) }})
	_, expired := login(t, past, nil, "dave")

	edge := newSessions(t, auth.Options{Now: func() time.Time { return now.Add(-24 * time.Hour) }})
	_, edgeCookie := login(t, edge, nil, "dave")

	// flip changes one character of s at i to another valid base64url one.
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}

	tests := []struct {
		name   string
		cookie *http.Cookie
		want   error
	}{
		{"no cookie", nil, auth.ErrNoSession},
		{"other cookie name", &http.Cookie{Name: "other", Value: good.Value}, auth.ErrNoSession},
		{"empty value", &http.Cookie{Name: good.Name, Value: ""}, auth.ErrNoSession},
		{"tampered payload", &http.Cookie{Name: good.Name, Value: flip(payload, 3) + "." + sig}, auth.ErrBadSession},
		{"tampered signature first", &http.Cookie{Name: good.Name, Value: payload + "." + flip(sig, 0)}, auth.ErrBadSession},
		{"tampered signature last", &http.Cookie{Name: good.Name, Value: payload + "." + flip(sig, len(sig)-1)}, auth.ErrBadSession},
		{"signature of other payload", &http.Cookie{Name: good.Name, Value: strings.Split(otherCookie.Value, ".")[0] + "." + sig}, auth.ErrBadSession},
		{"other secret", &http.Cookie{Name: good.Name, Value: otherCookie.Value}, auth.ErrBadSession},
		{"no dot", &http.Cookie{Name: good.Name, Value: payload + sig}, auth.ErrBadSession},
		{"empty signature", &http.Cookie{Name: good.Name, Value: payload + "."}, auth.ErrBadSession},
		{"empty payload", &http.Cookie{Name: good.Name, Value: "." + sig}, auth.ErrBadSession},
		{"garbage", &http.Cookie{Name: good.Name, Value: "not-a-session"}, auth.ErrBadSession},
		{"bad base64", &http.Cookie{Name: good.Name, Value: "!!!." + sig}, auth.ErrBadSession},
		{"too long", &http.Cookie{Name: good.Name, Value: strings.Repeat("A", 5000) + "." + sig}, auth.ErrBadSession},
		{"expired", expired, auth.ErrExpired},
		{"expired exactly at max age", edgeCookie, auth.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.FromRequest(requestWith(tt.cookie))
			if !errors.Is(err, tt.want) {
				t.Fatalf("FromRequest = %+v, %v; want %v", got, err, tt.want)
			}
			if got != (auth.Session{}) {
				t.Errorf("session on error = %+v, want zero", got)
			}
		})
	}
}

// TestSignedButMalformed signs payloads that are not valid sessions: a
// correct signature must not make a malformed payload acceptable.
func TestSignedButMalformed(t *testing.T) {
	s := newSessions(t, auth.Options{})
	tests := []struct {
		name string
		sess auth.Session
	}{
		{"no id", auth.Session{Nickname: "x", Issued: time.Now()}},
		{"no nickname", auth.Session{ID: "abc", Issued: time.Now()}},
		{"no issued", auth.Session{ID: "abc", Nickname: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := s.Encode(tt.sess)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if _, err := s.Decode(v); !errors.Is(err, auth.ErrBadSession) {
				t.Fatalf("Decode = %v, want ErrBadSession", err)
			}
		})
	}
}

func TestCookieFlags(t *testing.T) {
	plain := httptest.NewRequest(http.MethodPost, "http://example.com/join", nil)
	overTLS := httptest.NewRequest(http.MethodPost, "https://example.com/join", nil)
	overTLS.TLS = &tls.ConnectionState{}
	tests := []struct {
		name       string
		r          *http.Request
		wantSecure bool
	}{
		{"plain http", plain, false},
		{"tls", overTLS, true},
	}
	s := newSessions(t, auth.Options{MaxAge: time.Hour})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := login(t, s, tt.r, "erin")
			if c.Name != "chatterpro_session" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
				c.Path != "/" || c.MaxAge != 3600 || c.Secure != tt.wantSecure {
				t.Errorf("cookie = %+v", c)
			}
		})
	}
}

// TestSecureOverRealTLS logs in through a real TLS server.
func TestSecureOverRealTLS(t *testing.T) {
	s := newSessions(t, auth.Options{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.Login(w, r, "frank"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"chatterpro_session=", "Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %q", sc, want)
		}
	}
}

func TestLogout(t *testing.T) {
	s := newSessions(t, auth.Options{})
	w := httptest.NewRecorder()
	s.Logout(w, httptest.NewRequest(http.MethodPost, "/leave", nil))
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("Logout set %d cookies", len(cookies))
	}
	c := cookies[0]
	if c.Name != "chatterpro_session" || c.Value != "" || c.MaxAge >= 0 || c.Path != "/" {
		t.Errorf("logout cookie = %+v", c)
	}
}

func TestLoginRejectsBadNickname(t *testing.T) {
	s := newSessions(t, auth.Options{})
	for _, nick := range []string{"", "\xff"} {
		_, err := s.Login(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", nil), nick)
		if !errors.Is(err, auth.ErrBadNickname) {
			t.Errorf("Login(%q) = %v, want ErrBadNickname", nick, err)
		}
	}
}
