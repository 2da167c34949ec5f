package channellayer

import (
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

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

// Envelope and ParseEnvelope expose the envelope of a directed or plain
// group message on pub/sub, for the fuzz tests.
func Envelope(target string, m Message) string { return envelope(target, m) }

// ParseEnvelope exposes parseEnvelope.
func ParseEnvelope(p string) (target string, m Message, recorded, ok bool) {
	return parseEnvelope(p)
}

// WithID exposes withID: the body with "id" inserted first.
func WithID(body []byte, id string) []byte { return withID(body, id) }

// StreamMessage exposes streamMessage: a history entry read back from a
// Redis stream (fields "t" and "d"), and whether it was one.
func StreamMessage(id string, values map[string]any) (Message, bool) {
	return streamMessage(redis.XMessage{ID: id, Values: values})
}

// HasTypeField exposes hasTypeField to the tests: whether an encoded JSON
// object has a top-level key decoders read as "type".
func HasTypeField(b []byte) bool { return hasTypeField(b) }

// Queued is how many commands wait in the pipeline of group's channel for
// a round trip.
func (r *Redis) Queued(group string) int {
	p := r.pipe.of(noWait, r.groupChan(group))
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}
