package consumer

import (
	"net/http"
	"net/url"
)

// Scope describes the connection a consumer serves, like the scope of an
// ASGI application: where it came from and who is on the other end.
type Scope struct {
	Path       string            // request path
	Params     map[string]string // path wildcards of the route, e.g. "room"
	Query      url.Values
	Header     http.Header // the request headers the router keeps (routing.Options.ScopeHeaders)
	RemoteAddr string
	User       *User // nil: anonymous
}

// Param returns a path wildcard's value, "" if absent.
func (s *Scope) Param(name string) string { return s.Params[name] }

// User is who is on the other end, as authentication established it.
type User struct {
	Name    string // display name
	Session string // session ID: the same for every tab of one login
}
