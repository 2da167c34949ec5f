package chat

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatterpro/chatterpro/routing"
)

// limits are the node's abuse caps (Config.MaxSessionConns, MaxAddrConns,
// JoinRate, TrustedProxies). The zero value limits nothing.
type limits struct {
	proxies *routing.TrustedProxies // nil: the TCP peer is the client
	conns   *routing.ConnCounter    // nil: no socket caps; shared by every transport
	joins   *routing.AddrLimiter    // nil: no join limit
}

func newLimits(cfg Config) (limits, error) {
	var l limits
	var err error
	if l.proxies, err = routing.NewTrustedProxies(cfg.TrustedProxies); err != nil {
		return l, fmt.Errorf("chat: %w", err)
	}
	if cfg.MaxSessionConns > 0 || cfg.MaxAddrConns > 0 {
		l.conns, err = routing.NewConnCounter(routing.ConnLimits{PerSession: cfg.MaxSessionConns, PerAddr: cfg.MaxAddrConns})
		if err != nil {
			return l, fmt.Errorf("chat: %w", err)
		}
	}
	if cfg.JoinRate > 0 {
		if l.joins, err = routing.NewAddrLimiter(cfg.JoinRate); err != nil {
			return l, fmt.Errorf("chat: %w", err)
		}
	}
	return l, l.register(cfg.Registry)
}

// register adds chatterpro_refused_total{cap} to reg: what each cap has
// refused on this node (0 for a cap that is off), so that an operator sees
// whether the caps bite.
func (l limits) register(reg prometheus.Registerer) error {
	counts := map[string]func() uint64{
		"session_conns": func() uint64 {
			if l.conns == nil {
				return 0
			}
			n, _ := l.conns.Refused()
			return n
		},
		"addr_conns": func() uint64 {
			if l.conns == nil {
				return 0
			}
			_, n := l.conns.Refused()
			return n
		},
		"join_rate": func() uint64 {
			if l.joins == nil {
				return 0
			}
			return l.joins.Refused()
		},
	}
	for name, count := range counts {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "chatterpro_refused_total",
			Help:        "Requests refused with 429 by a cap, by cap: session_conns, addr_conns (sockets) and join_rate (POST /join).",
			ConstLabels: prometheus.Labels{"cap": name},
		}, func() float64 { return float64(count()) })
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return fmt.Errorf("chat: registering metrics: %w", err)
			}
		}
	}
	return nil
}

// allowJoin takes one join of r's client address; if it is over the join
// rate it returns false and how long to wait.
func (l limits) allowJoin(r *http.Request) (ok bool, wait time.Duration) {
	if l.joins == nil {
		return true, 0
	}
	return l.joins.Allow(l.proxies.ClientAddr(r))
}

// refuseJoin answers a join over the rate: 429 with Retry-After (whole
// seconds, at least 1) and the join form, filled in as it came, saying how
// long to wait.
func (p *pages) refuseJoin(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	unit := "seconds"
	if secs == 1 {
		unit = "second"
	}
	room := r.PostForm.Get("room")
	if other := r.PostForm.Get("room-other"); strings.TrimSpace(other) != "" {
		room = other
	}
	msg := fmt.Sprintf("Too many joins from your address in a short time. Please wait %d %s and try again.", secs, unit)
	p.render(w, http.StatusTooManyRequests, "join.html", p.joinForm(r.PostForm.Get("nickname"), strings.TrimSpace(room), msg))
}
