package channellayer

import (
	"errors"
	"time"
)

// HashSlot exposes hashSlot to the tests: the Redis Cluster hash slot of a
// key, as the layer computes it to give each slot its own publish pipeline.
func HashSlot(key string) int { return int(hashSlot(key)) }

// ParseRecorded exposes parseRecorded to the tests: the messages of a
// recorded envelope as the record script publishes it, and whether it was
// one and well formed.
func ParseRecorded(p string) ([]Message, bool) {
	var ms []Message
	ok := parseRecorded(p, func(m Message) { ms = append(ms, m) })
	return ms, ok
}

// SetReady exposes setReady to the tests: the layer counts as connected or
// not, as its subscriber would set it, without taking Redis away.
func (r *Redis) SetReady(ready bool) { r.setReady(ready, errTestNotReady) }

var errTestNotReady = errors.New("set by a test")

// SetClock exposes the clock of MemoryOptions.GroupTTL to the tests: now
// replaces time.Now for deciding whether a group's history is idle.
func (m *Memory) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Envelope exposes envelope to the tests: the pub/sub payload of a plain
// (not recorded) message, target being the channel of a directed send or
// the channel a group send skips.
func Envelope(target string, m Message) string { return envelope(target, m) }

// ParseEnvelope exposes parseEnvelope to the tests.
func ParseEnvelope(p string) (target string, m Message, recorded, ok bool) {
	return parseEnvelope(p)
}

// FormatVersion exposes formatVersion to the tests.
const FormatVersion = formatVersion

// EnvelopeTo exposes envelopeTo to the tests: the envelope of a directed
// send to channel, of the given process, in the format it reads.
func EnvelopeTo(process, channel string, m Message) string { return envelopeTo(process, channel, m) }
