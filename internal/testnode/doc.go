// Package testnode runs real chatterpro server processes in tests and
// talks to them over the wire interface.
//
// Build compiles ./cmd/chatterpro once per test binary (with -race when the
// tests themselves run with -race); Start runs it on a free loopback port,
// waits until /healthz answers and kills it when the test ends. Join and
// Client speak the chat's HTTP and websocket frames the way a browser does:
// a session cookie from POST /join, then JSON frames on /ws/chat/{room}/.
// Because nodes started with the same secret accept each other's cookies,
// a client can reconnect to another node with DialTo.
//
// Use Main from TestMain: it runs the tests, removes the built binary and
// checks for leaked goroutines:
//
//	func TestMain(m *testing.M) { testnode.Main(m) }
//
// A Node's methods are safe for concurrent use. A Client is meant for one
// goroutine, except that its frames are read in the background, so a test
// never loses the connection by giving up on a read.
package testnode
