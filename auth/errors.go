package auth

import "errors"

var (
	// ErrNoSession means the request carries no session cookie.
	ErrNoSession = errors.New("auth: no session")
	// ErrBadSession means the session cookie is malformed or its signature
	// does not match (tampered, or signed with another secret).
	ErrBadSession = errors.New("auth: bad session")
	// ErrExpired means the session cookie is genuine but older than MaxAge.
	ErrExpired = errors.New("auth: session expired")
	// ErrSecretTooShort is returned by New when Options.Secret is shorter
	// than MinSecretLen bytes.
	ErrSecretTooShort = errors.New("auth: secret too short")
	// ErrBadNickname is returned by Login for an empty nickname or one that
	// is not valid UTF-8.
	ErrBadNickname = errors.New("auth: bad nickname")
)
