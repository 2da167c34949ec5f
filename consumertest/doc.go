// Package consumertest drives a consumer in a test without a network, like
// Channels' WebsocketCommunicator.
//
// A Communicator runs the framework's real connection loops (limits, send
// queue, dispatch of layer events) over an in-memory pipe instead of a
// socket: Connect, SendText/SendJSON, Receive/ReceiveJSON, ReceiveNothing,
// Disconnect. Its scope is built by hand (Options.Scope). Communicators that
// share a layer (Options.Layer) see each other's group sends, so group
// behaviour is testable too.
//
// To test what a router decides (the origin check, Identify, path
// parameters, refusals with their HTTP status), Serve an http.Handler (a
// routing.Router) and Dial it: the handshake and the websocket run over
// in-memory connections, through every middleware a real request meets.
package consumertest
