// Package chat is the ChatterPro application: the browser chat built on the
// framework (packages consumer, routing, channellayer, auth).
//
// New builds an App, an http.Handler that serves the join page (GET /,
// POST /join), the chat page (GET /chat/{room}), POST /leave, the static
// files, the chat websocket (/ws/chat/{room}/), and /healthz, /readyz and
// /metrics. The wire interface (frames, error codes, close codes) is the
// one in the project's design document.
//
// Each socket is served by a room consumer: it tracks the connection's
// presence, joins the room's group, sends the history frame, the users
// frame and the welcome notice, then relays messages. Chat messages are
// recorded in the room's history by the same layer call that sends them, so
// the sender's own copy is its acknowledgement and a reconnecting client
// resumes with since=<id> without gaps or repeats.
//
// A node-level hub does the work that must not be repeated per socket: one
// users frame per room per second at most (coalesced), the refresh of the
// node's presence entries, and the sweep that announces members whose
// entries expired (a dead node's users, or a lost connection after its
// grace period). Each expired entry is handed to one sweeper cluster-wide,
// so each departure is announced once.
package chat
