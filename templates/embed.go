// Package templates holds the HTML templates of the ChatterPro pages,
// embedded in the binary. The chat package parses them with html/template.
//
// layout.html defines the shared parts ("head", "logo", "icon-*"); join.html,
// chat.html and error.html are the pages. Templates call a "static" function
// that maps a file name in package static to its versioned URL.
package templates

import "embed"

// FS holds every *.html template.
//
//go:embed *.html
var FS embed.FS
