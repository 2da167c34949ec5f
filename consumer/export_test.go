package consumer

import "time"

// SetReadLinger sets how long a reader waits for the next message, for a
// test; the returned func restores it.
func SetReadLinger(d time.Duration) (restore func()) {
	old := readLinger
	readLinger = d
	return func() { readLinger = old }
}

// SetConnectWait sets how long a connection waits for a turn in Connect,
// for a test; the returned func restores it.
func SetConnectWait(d time.Duration) (restore func()) {
	old := connectWait
	connectWait = d
	return func() { connectWait = old }
}

// Waiting returns how many connections wait for a turn in Connect.
func Waiting(s *Server) int64 { return s.waiting.Load() }
