// Package routing maps URL patterns to consumers, like Channels' URLRouter,
// with the pattern syntax of Go's http.ServeMux ("/ws/chat/{room}/").
//
// A websocket route builds the consumer's Scope from the request: the
// pattern's wildcards, the query, the headers named in Options.ScopeHeaders,
// the remote address and the user that Options.Identify finds (for instance
// from a session cookie). The
// origin check is on by default: a browser request (one with an Origin
// header) from an origin other than the page's own or Options.AllowedOrigins
// is refused with 403. Plain HTTP routes share the same mux, and middleware
// is func(http.Handler) http.Handler, composed with Use or Chain.
//
// Against abuse, a ConnCounter (Options.Conns) caps the connections one
// session and one client address hold on a node: a connection over a cap is
// refused with 429 before the handshake, and its slot is given back when it
// ends. Any other transport that serves consumers wraps them with the same
// counter's Limit. TrustedProxies tells the client address behind reverse
// proxies (X-Forwarded-For, read only from a trusted peer), and an
// AddrLimiter rate-limits what one address does, such as logging in.
//
// A consumer's route also serves the fallback transport for clients that
// cannot open a websocket: ?transport=sse opens an event stream (GET) and
// carries the client's frames (POST), after the same origin and Identify
// checks, to the same consumer with the same Scope.
package routing
