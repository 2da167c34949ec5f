// Package layertest is the conformance suite every channellayer backend
// passes: the semantics of channellayer.Layer and its optional capabilities
// (History, Presence, Checker, Notifier), checked the same way for Memory, for Redis on
// miniredis and for Redis on a real redis-server.
//
// # Running the suite on a backend
//
// A backend's test calls Run with a factory. Run calls the factory once per
// rule, from that rule's subtest, and most rules run in parallel, so each
// call must build a layer on a fresh, empty store of its own: a new Memory,
// a new Redis database or key prefix. The factory tells the suite the limits
// the layer was built with; build it with small ones so the suite is fast:
//
//	func TestRedis(t *testing.T) {
//		srv := redistest.Start(t) // one server for the whole suite
//		layertest.Run(t, func(t *testing.T) layertest.Setup {
//			opts := channellayer.RedisOptions{Prefix: uniquePrefix(t), Capacity: 16, Expiry: 400 * time.Millisecond, HistorySize: 16}
//			return layertest.Setup{
//				Layer: newRedis(t, srv, opts),
//				Peer:  func(t *testing.T) channellayer.Layer { return newRedis(t, srv, opts) },
//				Restart: func(t *testing.T, down func()) {
//					srv.Kill()
//					down()
//					srv.Restart(t)
//				},
//				Capacity:    opts.Capacity,
//				Expiry:      opts.Expiry,
//				HistorySize: opts.HistorySize,
//			}
//		})
//	}
//
// Peer stands in for another process on the same store: rules put members
// of one group on both and send from both. A one-process backend leaves
// Peer nil. The suite closes every layer it was given when a rule ends; the
// factory registers t.Cleanup for whatever else it started (clients,
// servers). Restart, if set, lets the restart rule take the server away
// and bring it back; that rule runs before the parallel ones, alone (other
// tests sharing the server must not run in parallel with Run).
//
// # What it checks
//
//   - Channels: unique names; Send and Receive within and across processes,
//     in order, bodies byte for byte; Receive returns ctx.Err() promptly;
//     unknown and discarded channels give ErrNoChannel, empty arguments
//     ErrInvalid, every call after Close ErrClosed.
//   - Groups: a group send reaches every member on every process exactly
//     once and nobody else; GroupDiscard and DiscardChannel stop delivery;
//     one sender's messages arrive in order, also with several senders on
//     two processes at once.
//   - Notifier (if implemented): the arrival callback fires for direct and
//     group sends from every process, for an overflow and for the channel's
//     end; TryReceive returns what waits, in order, without waiting.
//   - Limits: Send to a full channel gives ErrChannelFull; a group send skips
//     a full channel without waiting and flags it (ErrOverflow on its next
//     Receive); messages older than Expiry are dropped and free their room.
//   - Presence: Track, Untrack and List across processes; TTL and refresh;
//     concurrent Expire calls return each expired entry exactly once.
//   - History: increasing cluster-wide IDs, also first in the body and on the
//     delivered message; Recent, Since, trimming to HistorySize, and
//     ErrUnknownID for malformed, unknown and trimmed IDs.
//   - IdempotentRecorder (if implemented): a keyed record is recorded and
//     delivered once, also when both processes race to send it; a repeat
//     returns the original; a key lives as long as its message is kept.
//   - Pager (if implemented): Before pages back from a kept ID, oldest
//     first, with "more" exact at the history's edge; ErrUnknownID for
//     malformed, unknown and trimmed IDs.
//   - Directory (if implemented): counts set on either process, read on
//     both, highest first; zero removes an entry, its TTL ends it.
//   - Restart: while the server is away every call returns within a bound and
//     Check fails; once it is back, group sends reach members on both
//     processes again, once each and in order, and Check passes.
//
// The rules are subtests named after what they check (NewChannel,
// GroupSend, OrderConcurrent, Capacity, GroupOverflow, Expiry, Presence,
// HistorySince, Restart, ...); run one with go test -run 'TestRedis/Expiry'.
// A rule for a capability the backend lacks (History, Presence, Notifier,
// Drainer, Recorder, a Restart hook) is skipped, with the reason: a PASS
// always means the rule ran. Every wait is bounded: a broken backend fails,
// it does not hang the test.
package layertest
