// Package client serves chatterpro.js, the framework's JavaScript client,
// and its TypeScript declarations, chatterpro.d.ts, so that any app on the
// framework can mount them:
//
//	mux.Handle("GET /static/chatterpro.js", client.Handler())
//	mux.Handle("GET /static/chatterpro.d.ts", client.Handler())
//
// A page then imports the module:
//
//	<script type="module">
//	import { Client } from "/static/chatterpro.js";
//	const c = new Client("/ws/echo/");
//	c.on("frame", (f) => console.log(f));
//	</script>
//
// chatterpro.js is an ES module without dependencies or build step. It
// opens a consumer's route over a websocket, or over Server-Sent Events plus
// POST where a websocket cannot be opened; reconnects with capped
// exponential backoff and full jitter; detects a dead peer with the
// framework's ping and pong frames; resumes with since; matches replies to
// requests by ref; and keeps sends made while offline in an outbox, sent
// under the server's rate limit. chatterpro.d.ts documents its API.
//
// The files are embedded in the binary (they live in package static). The
// handler is immutable and safe for concurrent use.
package client
