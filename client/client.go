package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/static"
)

// Script and Declarations are the names of the files the handler serves.
const (
	Script       = "chatterpro.js"
	Declarations = "chatterpro.d.ts"
)

type file struct {
	data        []byte
	contentType string
	etag        string // quoted
}

type table struct {
	files   map[string]file
	version string
}

// load reads the embedded files once.
var load = sync.OnceValue(func() table {
	t := table{files: map[string]file{}}
	all := sha256.New()
	for _, f := range []struct{ name, contentType string }{
		{Script, "text/javascript; charset=utf-8"},
		{Declarations, "application/typescript; charset=utf-8"},
	} {
		data, err := fs.ReadFile(static.SDK, f.name)
		if err != nil {
			// The files are embedded at build time: a missing one is a
			// broken build, not a runtime condition.
			panic(fmt.Sprintf("client: embedded %s: %v", f.name, err))
		}
		sum := sha256.Sum256(data)
		all.Write(sum[:])
		t.files[f.name] = file{data: data, contentType: f.contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	t.version = hex.EncodeToString(all.Sum(nil)[:8])
	return t
})

// Version is a short hash of both files. A request whose query carries
// v=<Version> may be cached for good: link to
// "/static/chatterpro.js?v="+client.Version() to use that.
func Version() string { return load().version }

// Source returns the bytes of a served file (Script or Declarations), and
// false for any other name.
func Source(name string) ([]byte, bool) {
	f, ok := load().files[name]
	return bytes.Clone(f.data), ok
}

// Handler returns a handler of GET and HEAD for the two files, under any
// prefix: it serves the file named by the request path's last element and
// answers 404 for any other name, 405 for other methods. Responses carry the
// right Content-Type, X-Content-Type-Options: nosniff and an ETag
// (conditional requests get 304); a request with ?v=<Version> is cacheable
// for a year, any other must be revalidated (Cache-Control: no-cache).
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	t := load()
	name := path.Base(r.URL.Path)
	f, ok := t.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", f.etag)
	if r.URL.Query().Get("v") == t.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.data))
}
