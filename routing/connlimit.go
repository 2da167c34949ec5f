package routing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/chatterpro/chatterpro/consumer"
)

var (
	// ErrSessionConns refuses a connection of a session that holds as
	// many as ConnLimits.PerSession on this node already.
	ErrSessionConns = errors.New("routing: too many connections from this session")
	// ErrAddrConns refuses a connection from a client address that holds
	// as many as ConnLimits.PerAddr on this node already.
	ErrAddrConns = errors.New("routing: too many connections from this address")
)

// ConnLimits caps the connections of one node. The zero value caps nothing.
type ConnLimits struct {
	// PerSession is how many connections one session (consumer.User's
	// Session) may hold at once. Defaults to 0: no cap.
	PerSession int
	// PerAddr is how many connections one client address (see
	// TrustedProxies.ClientAddr; an IPv6 client counts by its /64) may
	// hold at once. Defaults to 0: no cap.
	PerAddr int
}

// ConnCounter counts the open connections of a node per session and per
// client address, and refuses those over its ConnLimits. Every transport
// that serves consumers (websocket, event stream) takes its slots from the
// same counter, so that the caps hold whichever way a client connects. It
// keeps an entry only while a session or address holds a connection, so it
// never holds more entries than there are connections. It is safe for
// concurrent use.
type ConnCounter struct {
	limits ConnLimits

	mu       sync.Mutex
	sessions map[string]int
	addrs    map[string]int

	refusedSession, refusedAddr atomic.Uint64
}

// NewConnCounter returns a counter that enforces limits.
func NewConnCounter(limits ConnLimits) (*ConnCounter, error) {
	if limits.PerSession < 0 || limits.PerAddr < 0 {
		return nil, fmt.Errorf("routing: connection limits must not be negative (0 is no cap), not %+v", limits)
	}
	return &ConnCounter{limits: limits, sessions: make(map[string]int), addrs: make(map[string]int)}, nil
}

// Acquire takes a slot for one connection of session (empty: anonymous,
// not capped per session) from addr (the zero Addr: not capped per
// address). It returns ErrSessionConns or ErrAddrConns if a cap is reached;
// otherwise release, which gives the slot back (calling it again does
// nothing).
func (cc *ConnCounter) Acquire(session string, addr netip.Addr) (release func(), err error) {
	s, err := cc.acquire(session, addr)
	if err != nil {
		return nil, err
	}
	if s == (slot{}) {
		return func() {}, nil
	}
	var once sync.Once
	return func() { once.Do(func() { cc.release(s) }) }, nil
}

// slot is what one connection holds: the session and address key it is
// counted under ("" where not counted).
type slot struct{ session, key string }

func (cc *ConnCounter) acquire(session string, addr netip.Addr) (slot, error) {
	if cc.limits.PerSession == 0 {
		session = ""
	}
	key := ""
	if cc.limits.PerAddr > 0 {
		key = addrKey(addr)
	}
	if session == "" && key == "" {
		return slot{}, nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if session != "" && cc.sessions[session] >= cc.limits.PerSession {
		cc.refusedSession.Add(1)
		return slot{}, ErrSessionConns
	}
	if key != "" && cc.addrs[key] >= cc.limits.PerAddr {
		cc.refusedAddr.Add(1)
		return slot{}, ErrAddrConns
	}
	if session != "" {
		cc.sessions[session]++
	}
	if key != "" {
		cc.addrs[key]++
	}
	return slot{session, key}, nil
}

func (cc *ConnCounter) release(s slot) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	drop := func(m map[string]int, k string) {
		if k == "" {
			return
		}
		if m[k] <= 1 {
			delete(m, k)
		} else {
			m[k]--
		}
	}
	drop(cc.sessions, s.session)
	drop(cc.addrs, s.key)
}

// Held returns how many sessions and client addresses hold at least one
// counted connection (for metrics and tests: both are 0 once every
// connection has ended).
func (cc *ConnCounter) Held() (sessions, addrs int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.sessions), len(cc.addrs)
}

// Refused returns how many connections the counter has refused so far, for
// its session cap and for its address cap.
func (cc *ConnCounter) Refused() (session, addr uint64) {
	return cc.refusedSession.Load(), cc.refusedAddr.Load()
}

// Limit wraps cons so that its connection takes a slot before cons's
// Connect runs and gives it back when the connection ends. A connection
// over a cap is refused before the handshake with 429 Too Many Requests
// and a body that says which cap it hit.
func (cc *ConnCounter) Limit(session string, addr netip.Addr, cons consumer.Consumer) consumer.Consumer {
	if cc == nil {
		return cons
	}
	return &limited{Consumer: cons, cc: cc, held: slot{session: session}, addr: addr}
}

// limited is a consumer that holds a ConnCounter slot from Connect to
// Disconnect. It keeps the slot itself rather than a release func: every
// open connection has one, so its few bytes count.
type limited struct {
	consumer.Consumer
	cc      *ConnCounter
	addr    netip.Addr
	held    slot // its session is who asks; Connect fills in the rest
	holding bool // held is counted, until Disconnect gives it back
}

func (l *limited) Connect(ctx context.Context, c *consumer.Conn) (err error) {
	s, err := l.cc.acquire(l.held.session, l.addr)
	switch {
	case errors.Is(err, ErrSessionConns):
		return consumer.Refuse(http.StatusTooManyRequests, fmt.Sprintf(
			"too many connections: this session has %d open on this server already, the most it may; close a tab or window of the chat and try again",
			l.cc.limits.PerSession))
	case errors.Is(err, ErrAddrConns):
		return consumer.Refuse(http.StatusTooManyRequests, fmt.Sprintf(
			"too many connections: your address has %d open on this server already, the most it may; close some and try again",
			l.cc.limits.PerAddr))
	case err != nil:
		return err
	}
	kept := false
	defer func() {
		if !kept { // refused, or panicked: no Disconnect will follow
			l.cc.release(s)
		}
	}()
	if err := l.Consumer.Connect(ctx, c); err != nil {
		return err
	}
	// A Connect that closed its connection (ctx is the connection's) is
	// refused by the server without a Disconnect.
	if ctx.Err() != nil {
		return nil
	}
	kept = true
	l.held, l.holding = s, true
	return nil
}

// Disconnect gives the slot back after the consumer's Disconnect. The
// consumer's calls run one at a time, after Connect, so held needs no lock.
func (l *limited) Disconnect(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) {
	defer func() {
		if l.holding {
			l.holding = false
			l.cc.release(l.held)
		}
	}()
	l.Consumer.Disconnect(ctx, c, code)
}
