// Package consumer runs websocket consumers: one Consumer instance per
// connection, in the spirit of Django Channels.
//
// A consumer has three methods. Connect runs before the handshake completes
// and accepts or refuses the connection; Receive handles each text frame from
// the client; Disconnect runs once, with the close code. Layer events sent to
// the connection's channel, or to a group it joined, reach the handler
// registered for their "type" with Conn.On.
//
// The framework owns the socket. It reads with a size limit (1009 when a
// frame is over it), writes from a queue bounded in bytes (a client that
// falls behind is closed with 1013; no sender ever waits for it), pings idle
// peers and closes dead ones, and turns a panic in a consumer into a 1011
// close of that connection alone. The consumer's methods and handlers are
// never called concurrently for one connection, so a consumer needs no locks
// for its own state.
//
// Server.Shutdown closes every connection with 1012 (service restart), so
// clients reconnect to another node, and waits for them. Package
// consumertest drives a consumer without a network.
package consumer
