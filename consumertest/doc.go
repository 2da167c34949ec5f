// Package consumertest drives a consumer in a test without a network, like
// Channels' WebsocketCommunicator.
//
// A Communicator runs the framework's real connection loops (limits, send
// queue, dispatch of layer events) over an in-memory pipe instead of a
// socket: Connect, SendText/SendJSON, Receive/ReceiveJSON, ReceiveNothing,
// Disconnect. Communicators that share a layer (Options.Layer) see each
// other's group sends, so group behaviour is testable too.
package consumertest
