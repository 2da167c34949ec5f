// Package channellayer carries messages between consumers: the channel layer
// of ChatterPro, in the shape of the Django Channels layer specification.
//
// Every consumer owns a channel (NewChannel) and receives on it (Receive).
// Channels join named groups (GroupAdd, GroupDiscard); GroupSend delivers a
// message once to every channel of a group, on every process that shares the
// layer. A message is a JSON object with a "type" field, encoded once per
// group send: every member receives the same bytes.
//
// Two backends implement Layer: Memory for one process (the default; no
// server) and Redis for many processes behind a load balancer, on one Redis
// or a Redis Cluster (every key of a group shares one hash tag, so a group
// lives on one shard and uses sharded pub/sub). Both also implement the
// optional capabilities History (the last messages of a group, with
// cluster-wide increasing IDs), Presence (who is online in a group) and
// Notifier (an arrival callback, so an idle consumer needs no goroutine),
// IdempotentRecorder (record a message once per key, for retries), Pager
// (page back through history) and Directory (cluster-wide named counts);
// Redis also implements Checker (is the server reachable, for a readiness
// probe). Find them by type assertion:
//
//	if h, ok := layer.(channellayer.History); ok { ... }
//
// Channels are bounded (DefaultCapacity). Send to a full channel returns
// ErrChannelFull; a group send skips a full channel and flags it, so the
// next Receive on it returns ErrOverflow and the consumer behind it can be
// closed as too slow. No sender ever waits for a slow receiver.
//
// The Redis backend survives Redis restarts: while Redis is away its calls
// fail at once with an error wrapping ErrUnavailable (they never block or
// panic) and Check reports it; when Redis returns it resubscribes by itself
// and delivers from history what was recorded while its subscription was
// down, so a reconnect loses no recorded message and repeats none.
//
// All methods are safe for concurrent use. Messages from one sender to one
// group arrive in the order sent, once each. The package
// channellayer/layertest holds the conformance suite every backend passes.
package channellayer
