// Package layertest is the conformance suite every channellayer backend
// passes: the semantics of channellayer.Layer and its optional capabilities
// (History, Presence, Checker), checked the same way for Memory, for Redis on
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
// and bring it back; that rule runs before the parallel ones, alone.
//
// The rules are subtests named after what they check (NewChannel,
// GroupSend, OrderConcurrent, Capacity, GroupOverflow, Expiry, Presence,
// HistorySince, Restart, ...); run one with go test -run 'TestRedis/Expiry'.
// Rules for a capability the backend lacks pass with a log line. Every wait
// is bounded: a broken backend fails, it does not hang the test.
package layertest
