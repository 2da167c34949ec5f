package routing

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// AddrLimiter limits how often each client address may do something (log
// in, say): a token bucket per address (an IPv6 client counts by its /64).
// It forgets an address once its bucket has filled up again, which is
// exactly when a new bucket would behave the same, so it holds an entry
// only for the addresses seen within the time a bucket takes to fill. It is
// safe for concurrent use.
type AddrLimiter struct {
	limit rate.Limit
	burst int
	fill  time.Duration // how long an empty bucket takes to fill
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time

	refused atomic.Uint64
}

// NewAddrLimiter allows each address perMinute events a minute, in bursts
// of up to half that (at least 1). perMinute must be positive.
func NewAddrLimiter(perMinute int) (*AddrLimiter, error) {
	if perMinute <= 0 {
		return nil, fmt.Errorf("routing: an address limit needs a positive number of events per minute, not %d", perMinute)
	}
	burst := max(perMinute/2, 1)
	limit := rate.Limit(float64(perMinute) / 60)
	return &AddrLimiter{
		limit:   limit,
		burst:   burst,
		fill:    time.Duration(float64(burst) / float64(limit) * float64(time.Second)),
		now:     time.Now,
		buckets: make(map[string]*rate.Limiter),
	}, nil
}

// Allow takes one event of addr from its bucket. If the bucket is empty it
// returns false and how long until it holds one again. The zero Addr is
// never limited.
func (l *AddrLimiter) Allow(addr netip.Addr) (ok bool, retryAfter time.Duration) {
	key := addrKey(addr)
	if key == "" {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[key] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	l.refused.Add(1)
	// Whole milliseconds, rounded up; the epsilon absorbs the float error
	// of a wait that is a whole number of them.
	ms := (1 - b.TokensAt(now)) / float64(l.limit) * 1000
	return false, time.Duration(math.Ceil(ms-1e-6)) * time.Millisecond
}

// sweep forgets the addresses whose buckets are full again, at most once
// per fill time: the map holds what the last two fill times brought.
func (l *AddrLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.fill {
		return
	}
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
}

// Len returns how many addresses the limiter holds a bucket for.
func (l *AddrLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Refused returns how many events the limiter has refused so far.
func (l *AddrLimiter) Refused() uint64 { return l.refused.Load() }
