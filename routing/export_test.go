package routing

import "time"

// SetClock makes l read the time from now (tests move it by hand).
func SetClock(l *AddrLimiter, now func() time.Time) { l.now = now }
