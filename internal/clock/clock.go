// Package clock lets code read the time through an interface, so that a
// test can move time forward instead of waiting for it.
//
// Production code holds a Clock that defaults to Real; tests put a fake in
// its place (internal/testkit has one). Only code whose tests would
// otherwise wait for real time to pass takes a Clock.
package clock

import "time"

// Clock tells the time. Implementations are safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
}

// Real is the system clock.
var Real Clock = realClock{}

type realClock struct{}

// Now returns time.Now().
func (realClock) Now() time.Time { return time.Now() }
