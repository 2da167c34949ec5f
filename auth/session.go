package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// MinSecretLen is the minimum length of Options.Secret in bytes.
const MinSecretLen = 16

// DefaultCookieName is the name of the session cookie unless
// Options.CookieName says otherwise.
const DefaultCookieName = "chatterpro_session"

// DefaultMaxAge is how long a session lasts unless Options.MaxAge says
// otherwise.
const DefaultMaxAge = 24 * time.Hour

// maxCookieLen bounds the cookie value we are willing to decode.
const maxCookieLen = 4096

// Options configures Sessions.
type Options struct {
	// Secret is the HMAC key. Required, at least MinSecretLen (16) bytes.
	// Every node behind one load balancer must use the same secret.
	Secret []byte
	// MaxAge is how long a session is valid after it was issued.
	// Defaults to 24h.
	MaxAge time.Duration
	// CookieName is the name of the session cookie.
	// Defaults to "chatterpro_session".
	CookieName string
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
}

// Session is the content of a session cookie.
type Session struct {
	// ID is random (128 bits), URL-safe, and new on every login.
	ID string
	// Nickname is the name the user logged in with.
	Nickname string
	// Issued is when the session was created, to the second.
	Issued time.Time
}

// Sessions issues and verifies session cookies.
type Sessions struct {
	secret []byte
	maxAge time.Duration
	name   string
	now    func() time.Time
}

// New validates opts and returns Sessions.
func New(opts Options) (*Sessions, error) {
	if len(opts.Secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: new sessions: %w: have %d bytes, need %d", ErrSecretTooShort, len(opts.Secret), MinSecretLen)
	}
	if opts.MaxAge < 0 {
		return nil, fmt.Errorf("auth: new sessions: negative MaxAge %v", opts.MaxAge)
	}
	s := &Sessions{
		secret: append([]byte(nil), opts.Secret...),
		maxAge: opts.MaxAge,
		name:   opts.CookieName,
		now:    opts.Now,
	}
	if s.maxAge == 0 {
		s.maxAge = DefaultMaxAge
	}
	if s.name == "" {
		s.name = DefaultCookieName
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// CookieName returns the name of the session cookie.
func (s *Sessions) CookieName() string { return s.name }

// MaxAge returns how long a session is valid.
func (s *Sessions) MaxAge() time.Duration { return s.maxAge }

// payload is the signed JSON. Short keys keep the cookie small; JSON
// handles any Unicode nickname safely.
type payload struct {
	ID       string `json:"i"`
	Nickname string `json:"n"`
	Issued   int64  `json:"t"`
}

// b64 is strict so that no two strings decode to the same signature.
var b64 = base64.RawURLEncoding.Strict()

// Login starts a new session for nickname: it creates a fresh session ID
// and sets the cookie on w. The cookie is Secure when r arrived over TLS.
func (s *Sessions) Login(w http.ResponseWriter, r *http.Request, nickname string) (Session, error) {
	if nickname == "" || !utf8.ValidString(nickname) {
		return Session{}, fmt.Errorf("auth: login: %w", ErrBadNickname)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Session{}, fmt.Errorf("auth: login: session id: %w", err)
	}
	sess := Session{
		ID:       b64.EncodeToString(raw[:]),
		Nickname: nickname,
		Issued:   s.now().Truncate(time.Second),
	}
	value, err := s.Encode(sess)
	if err != nil {
		return Session{}, fmt.Errorf("auth: login: %w", err)
	}
	http.SetCookie(w, &http.Cookie{
		Name:     s.name,
		Value:    value,
		Path:     "/",
		MaxAge:   max(1, int(s.maxAge/time.Second)),
		Expires:  sess.Issued.Add(s.maxAge).UTC(),
		HttpOnly: true,
		Secure:   r != nil && r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	})
	return sess, nil
}

// Logout clears the session cookie.
func (s *Sessions) Logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name:     s.name,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		Expires:  time.Unix(0, 0).UTC(),
		HttpOnly: true,
		Secure:   r != nil && r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	})
}

// FromRequest returns the session of r's cookie. The error matches
// ErrNoSession, ErrBadSession or ErrExpired.
func (s *Sessions) FromRequest(r *http.Request) (Session, error) {
	c, err := r.Cookie(s.name)
	if err != nil {
		return Session{}, ErrNoSession
	}
	return s.Decode(c.Value)
}

// Encode returns the signed cookie value for sess. Login uses it; it is
// exported for non-browser clients and tests that need a cookie value.
func (s *Sessions) Encode(sess Session) (string, error) {
	if !utf8.ValidString(sess.Nickname) || !utf8.ValidString(sess.ID) {
		return "", fmt.Errorf("auth: encode: %w", ErrBadNickname)
	}
	body, err := json.Marshal(payload{ID: sess.ID, Nickname: sess.Nickname, Issued: sess.Issued.Unix()})
	if err != nil {
		return "", fmt.Errorf("auth: encode: %w", err)
	}
	p := b64.EncodeToString(body)
	return p + "." + b64.EncodeToString(s.sign(p)), nil
}

// Decode verifies a cookie value and returns its session. The error
// matches ErrBadSession or ErrExpired.
func (s *Sessions) Decode(value string) (Session, error) {
	if value == "" {
		return Session{}, ErrNoSession
	}
	if len(value) > maxCookieLen {
		return Session{}, fmt.Errorf("%w: cookie too long", ErrBadSession)
	}
	p, sig, ok := strings.Cut(value, ".")
	if !ok || p == "" || sig == "" {
		return Session{}, fmt.Errorf("%w: malformed cookie", ErrBadSession)
	}
	gotSig, err := b64.DecodeString(sig)
	if err != nil {
		return Session{}, fmt.Errorf("%w: malformed signature", ErrBadSession)
	}
	if !hmac.Equal(gotSig, s.sign(p)) {
		return Session{}, fmt.Errorf("%w: signature mismatch", ErrBadSession)
	}
	body, err := b64.DecodeString(p)
	if err != nil {
		return Session{}, fmt.Errorf("%w: malformed payload", ErrBadSession)
	}
	var pl payload
	if err := json.Unmarshal(body, &pl); err != nil {
		return Session{}, fmt.Errorf("%w: malformed payload", ErrBadSession)
	}
	if pl.ID == "" || pl.Nickname == "" || pl.Issued <= 0 {
		return Session{}, fmt.Errorf("%w: incomplete payload", ErrBadSession)
	}
	sess := Session{ID: pl.ID, Nickname: pl.Nickname, Issued: time.Unix(pl.Issued, 0)}
	if !s.now().Before(sess.Issued.Add(s.maxAge)) {
		return Session{}, fmt.Errorf("%w: issued %s", ErrExpired, sess.Issued.UTC().Format(time.RFC3339))
	}
	return sess, nil
}

func (s *Sessions) sign(payload string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}
