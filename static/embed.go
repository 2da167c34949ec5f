// Package static holds the stylesheet, the browser code and the icons of the
// ChatterPro pages, embedded in the binary. Nothing is loaded from anywhere
// else.
//
// chatterpro.js is the framework's JavaScript client, an ES module for any
// consumer, with its TypeScript declarations in chatterpro.d.ts (package
// client serves both to any app); chat.js is the chat page, built on it;
// join.js is a small enhancement of the join form; style.css styles every
// page.
package static

import "embed"

// FS holds the static files, served under /static/.
//
//go:embed *.css *.js *.svg
var FS embed.FS

// SDK holds the JavaScript client, chatterpro.js, and its declarations,
// chatterpro.d.ts.
//
//go:embed chatterpro.js chatterpro.d.ts
var SDK embed.FS
