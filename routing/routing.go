package routing

import (
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/chatterpro/chatterpro/consumer"
)

// Options configures a Router. Only Server is required.
type Options struct {
	// Server runs the consumers. Required.
	Server *consumer.Server
	// AllowedOrigins are origins ("scheme://host[:port]") allowed to open
	// websockets besides the page's own. Defaults to none.
	AllowedOrigins []string
	// Identify tells who makes a websocket request. An error refuses it
	// with 403; a nil user is anonymous. Defaults to everyone anonymous.
	Identify func(r *http.Request) (*consumer.User, error)
	// ScopeHeaders names the request headers kept in Scope.Header for the
	// consumers, e.g. "User-Agent". Defaults to none: a connection keeps
	// its scope as long as it is open, and the whole request header would
	// cost every idle connection about a kilobyte.
	ScopeHeaders []string
	// Conns caps the connections per session and per client address; share
	// one counter between every handler that serves consumers. Defaults to
	// nil: no caps.
	Conns *ConnCounter
	// Proxies are the reverse proxies whose X-Forwarded-For tells the
	// client address that Conns counts. Defaults to nil: the TCP peer is
	// the client.
	Proxies *TrustedProxies
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Router maps URL patterns to consumers (websocket routes) and to plain
// HTTP handlers, with Go's ServeMux pattern syntax.
type Router struct {
	opts    Options
	mux     *http.ServeMux
	origins *originCheck
	handler http.Handler
	mws     []func(http.Handler) http.Handler
}

// New returns an empty router.
func New(opts Options) (*Router, error) {
	if opts.Server == nil {
		return nil, errors.New("routing: Options.Server is required")
	}
	oc, err := newOriginCheck(opts.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.ScopeHeaders = slices.Clone(opts.ScopeHeaders)
	for i, h := range opts.ScopeHeaders {
		opts.ScopeHeaders[i] = http.CanonicalHeaderKey(h)
	}
	r := &Router{opts: opts, mux: http.NewServeMux(), origins: oc}
	r.handler = r.mux
	return r, nil
}

// Factory makes the consumer for one connection.
type Factory func() consumer.Consumer

var wildcard = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

// Consumer routes websocket requests matching pattern (e.g.
// "/ws/chat/{room}/") to a new consumer from f. The pattern's wildcards
// become Scope.Params. A pattern ending in a slash matches that path only,
// as if it ended in "{$}": for "/ws/chat/{room}/", "/ws/chat/r/x" is 404,
// while "/ws/chat/r" is redirected to "/ws/chat/r/", as ServeMux does.
//
// The same route serves the fallback transport (?transport=sse): a GET opens
// an event stream to a new consumer with the same Scope (the query without
// "transport"), a POST carries the client's frames to it, whichever node it
// lands on (see consumer.Server.ServeSSE and ServeSSEPost); the POST's user
// must have the stream's session.
//
// Requests are refused in this order: from a foreign Origin with 403, those
// Identify refuses with 403, then GETs that are neither a websocket nor
// ?transport=sse with 426, POSTs without ?transport=sse with 405, then
// connections over a cap of Options.Conns with 429 (before the consumer's
// Connect; an event stream counts like a websocket). It
// panics if the pattern is invalid, like http.ServeMux.
func (r *Router) Consumer(pattern string, f Factory) {
	if strings.ContainsAny(pattern, " \t") {
		panic("routing: a consumer pattern is a path only (GET is implied): " + pattern)
	}
	var names []string
	for _, m := range wildcard.FindAllStringSubmatch(pattern, -1) {
		names = append(names, m[1])
	}
	if strings.HasSuffix(pattern, "/") {
		pattern += "{$}"
	}
	h := r.origins.wrap(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Identity before protocol: a request Identify refuses is 403
		// whether or not it asks for a websocket.
		var user *consumer.User
		if r.opts.Identify != nil {
			u, err := r.opts.Identify(req)
			if err != nil {
				http.Error(w, "forbidden: "+err.Error(), http.StatusForbidden)
				return
			}
			user = u
		}
		sse := isSSE(req)
		switch {
		case req.Method == http.MethodPost && sse:
			r.opts.Server.ServeSSEPost(w, req, user)
			return
		case req.Method == http.MethodPost:
			w.Header().Set("Allow", "GET")
			http.Error(w, "POST needs ?transport=sse", http.StatusMethodNotAllowed)
			return
		case !sse && !isUpgrade(req):
			w.Header().Set("Upgrade", "websocket")
			http.Error(w, "this is a websocket endpoint (or ?transport=sse)", http.StatusUpgradeRequired)
			return
		}
		scope := consumer.Scope{
			Path:       req.URL.Path,
			Params:     make([]consumer.Param, len(names)),
			Query:      req.URL.Query(),
			Header:     r.scopeHeader(req.Header),
			RemoteAddr: req.RemoteAddr,
			User:       user,
		}
		for i, n := range names {
			scope.Params[i] = consumer.Param{Name: n, Value: req.PathValue(n)}
		}
		cons := f()
		if r.opts.Conns != nil {
			session := ""
			if user != nil {
				session = user.Session
			}
			cons = r.opts.Conns.Limit(session, r.opts.Proxies.ClientAddr(req), cons)
		}
		if sse {
			scope.Query.Del("transport") // the consumer sees what a websocket's would
			r.opts.Server.ServeSSE(w, req, scope, cons)
			return
		}
		r.opts.Server.ServeWebSocket(w, req, scope, cons)
	}))
	r.mux.Handle("GET "+pattern, h)
	r.mux.Handle("POST "+pattern, h)
}

// scopeHeader copies the headers named in Options.ScopeHeaders.
func (r *Router) scopeHeader(h http.Header) http.Header {
	var kept http.Header
	for _, name := range r.opts.ScopeHeaders {
		if v := h[name]; len(v) > 0 {
			if kept == nil {
				kept = make(http.Header, len(r.opts.ScopeHeaders))
			}
			kept[name] = slices.Clone(v)
		}
	}
	return kept
}

// Handle routes plain HTTP requests matching pattern to h.
func (r *Router) Handle(pattern string, h http.Handler) { r.mux.Handle(pattern, h) }

// HandleFunc routes plain HTTP requests matching pattern to f.
func (r *Router) HandleFunc(pattern string, f http.HandlerFunc) { r.mux.Handle(pattern, f) }

// Use adds middleware around every route, outermost first.
func (r *Router) Use(mw ...func(http.Handler) http.Handler) {
	r.mws = append(r.mws, mw...)
	r.handler = Chain(r.mux, r.mws...)
}

// ServeHTTP dispatches to the matching route.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.handler.ServeHTTP(w, req) }

// Chain wraps h in middleware; the first one is the outermost.
func Chain(h http.Handler, mw ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// isSSE reports whether r is a request of the fallback transport
// (Server-Sent Events and POST, see consumer.Server.ServeSSE).
func isSSE(r *http.Request) bool { return r.URL.Query().Get("transport") == "sse" }

func isUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", "websocket")
}

func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
