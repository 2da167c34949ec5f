package consumer

import (
	"net/http"
	"net/url"
)

// Scope describes the connection a consumer serves, like the scope of an
// ASGI application: where it came from and who is on the other end.
type Scope struct {
	Path       string  // request path
	Params     []Param // path wildcards of the route, e.g. "room", in the pattern's order; read them with Param
	Query      url.Values
	Header     http.Header // the request headers the router keeps (routing.Options.ScopeHeaders)
	RemoteAddr string
	User       *User // nil: anonymous
}

// Param is one path wildcard of a route and the value the request gave it.
// A route has few: a slice of them costs a connection a fraction of what
// a map would, and a connection keeps its scope for its whole life.
type Param struct {
	Name, Value string
}

// Param returns a path wildcard's value, "" if absent.
func (s *Scope) Param(name string) string {
	for _, p := range s.Params {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// User is who is on the other end, as authentication established it.
type User struct {
	Name    string // display name
	Session string // session ID: the same for every tab of one login
}
