package routing

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// originCheck refuses browser requests from foreign origins. A request
// without an Origin header is not from a browser and passes; the page's own
// origin (the request's Host) and the allowed ones pass; others get 403.
type originCheck struct {
	allowed map[string]bool // "scheme://host[:port]", lower case
}

func newOriginCheck(allowed []string) (*originCheck, error) {
	oc := &originCheck{allowed: make(map[string]bool)}
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		u, err := url.Parse(a)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("routing: allowed origin %q is not of the form scheme://host[:port]", a)
		}
		oc.allowed[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	return oc, nil
}

// CheckOrigin returns middleware that refuses requests whose Origin is
// neither the request's own host nor one of allowed ("scheme://host[:port]").
func CheckOrigin(allowed []string) (func(http.Handler) http.Handler, error) {
	oc, err := newOriginCheck(allowed)
	if err != nil {
		return nil, err
	}
	return oc.wrap, nil
}

func (oc *originCheck) ok(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return oc.allowed[strings.ToLower(u.Scheme+"://"+u.Host)]
}

func (oc *originCheck) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !oc.ok(r) {
			http.Error(w, "forbidden: cross-origin request from "+r.Header.Get("Origin"), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
