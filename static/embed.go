// Package static holds the stylesheet, the vanilla-JS client and the icons
// of the ChatterPro pages, embedded in the binary. Nothing is loaded from
// anywhere else.
//
// chat.js speaks the websocket protocol of the chat page; join.js is a small
// enhancement of the join form; style.css styles every page.
package static

import "embed"

// FS holds the static files, served under /static/.
//
//go:embed *.css *.js *.svg
var FS embed.FS
