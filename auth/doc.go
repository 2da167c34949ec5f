// Package auth provides stateless, signed session cookies for ChatterPro.
//
// A session is a random ID, a nickname and the time it was issued. It lives
// entirely in the cookie: the payload is base64url-encoded JSON followed by
// an HMAC-SHA256 signature over it, so every node that shares the secret
// accepts the cookies of every other node and no server-side store is
// needed. A session expires MaxAge after it was issued; the browser is told
// the same through the cookie's Max-Age.
//
// Cookie flags: HttpOnly, SameSite=Lax, Path=/, and Secure when the login
// request arrived over TLS.
//
// Errors returned by [Sessions.FromRequest] match [ErrNoSession],
// [ErrBadSession] or [ErrExpired] with errors.Is.
//
// A [Sessions] value is immutable after [New] and safe for concurrent use.
package auth
