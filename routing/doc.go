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
// A consumer's route also serves the fallback transport for clients that
// cannot open a websocket: ?transport=sse opens an event stream (GET) and
// carries the client's frames (POST), after the same origin and Identify
// checks, to the same consumer with the same Scope.
package routing
