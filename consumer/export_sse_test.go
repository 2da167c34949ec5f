package consumer

import "time"

// SetSSEKeepalive sets how often an idle event stream gets a comment, for
// a test; the returned func restores it.
func SetSSEKeepalive(d time.Duration) (restore func()) {
	old := sseKeepalive
	sseKeepalive = d
	return func() { sseKeepalive = old }
}
