package client_test

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/client"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/static"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestHandler(t *testing.T) {
	js, ok := client.Source(client.Script)
	if !ok || !bytes.Contains(js, []byte("export class Client")) {
		t.Fatalf("Source(%q) = %d bytes, %v; want the module", client.Script, len(js), ok)
	}
	dts, ok := client.Source(client.Declarations)
	if !ok || !bytes.Contains(dts, []byte("export class Client")) {
		t.Fatalf("Source(%q) = %d bytes, %v; want the declarations", client.Declarations, len(dts), ok)
	}
	if _, ok := client.Source("chat.js"); ok {
		t.Error(`Source("chat.js") is ok; only the client's files are served`)
	}
	v := client.Version()
	if len(v) != 16 {
		t.Errorf("Version() = %q; want 16 hex digits", v)
	}

	mux := http.NewServeMux()
	mux.Handle("/static/", client.Handler())
	mux.Handle("/", http.StripPrefix("/", client.Handler())) // any prefix works
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name, method, path string
		status             int
		contentType, cache string
		body               []byte
	}{
		{"js", "GET", "/static/chatterpro.js", 200, "text/javascript; charset=utf-8", "no-cache", js},
		{"js versioned", "GET", "/static/chatterpro.js?v=" + v, 200, "text/javascript; charset=utf-8", "public, max-age=31536000, immutable", js},
		{"js old version", "GET", "/static/chatterpro.js?v=0000", 200, "text/javascript; charset=utf-8", "no-cache", js},
		{"declarations", "GET", "/static/chatterpro.d.ts", 200, "application/typescript; charset=utf-8", "no-cache", dts},
		{"other prefix", "GET", "/chatterpro.js", 200, "text/javascript; charset=utf-8", "no-cache", js},
		{"head", "HEAD", "/static/chatterpro.js", 200, "text/javascript; charset=utf-8", "no-cache", nil},
		{"other file", "GET", "/static/chat.js", 404, "", "", nil},
		{"post", "POST", "/static/chatterpro.js", 405, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d; want %d", res.StatusCode, tt.status)
			}
			if tt.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q; want %q", got, tt.contentType)
			}
			if got := res.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control %q; want %q", got, tt.cache)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", got)
			}
			if tt.method == "GET" && !bytes.Equal(body, tt.body) {
				t.Errorf("body is %d bytes, not the file's %d", len(body), len(tt.body))
			}
		})
	}

	// A revalidation with the ETag is a 304 without a body.
	res, err := srv.Client().Get(srv.URL + "/static/chatterpro.js")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	etag := res.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) {
		t.Fatalf("ETag %q", etag)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/static/chatterpro.js", nil)
	req.Header.Set("If-None-Match", etag)
	res, err = srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: status %d; want 304", res.StatusCode)
	}
}

// The chat serves its static files from static.FS: the client must be among
// them, so that the chat page can import it from /static/chatterpro.js.
func TestInStaticFS(t *testing.T) {
	js, _ := client.Source(client.Script)
	got, err := fs.ReadFile(static.FS, client.Script)
	if err != nil || !bytes.Equal(got, js) {
		t.Fatalf("static.FS %s: %d bytes, %v; want the client's %d", client.Script, len(got), err, len(js))
	}
	chat, err := fs.ReadFile(static.FS, "chat.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(chat, []byte(`from "./chatterpro.js"`)) {
		t.Errorf("chat.js does not import ./chatterpro.js")
	}
}
