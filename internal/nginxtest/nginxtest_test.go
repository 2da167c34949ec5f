package nginxtest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/deploy"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/nginxtest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// backend is an upstream that counts its requests, echoes the Host and
// forwarding headers, and echoes websocket messages.
type backend struct {
	name string
	hits atomic.Int64
	srv  *httptest.Server
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if r.URL.Path == "/ws" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				typ, msg, err := c.Read(r.Context())
				if err != nil {
					return
				}
				if err := c.Write(r.Context(), typ, append([]byte(b.name+":"), msg...)); err != nil {
					return
				}
			}
		}
		io.WriteString(w, b.name+" host="+r.Host+" xff="+r.Header.Get("X-Forwarded-For")+" proto="+r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestProxyRoundRobinHeadersAndFailover(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	ng := nginxtest.Start(t, a.addr(), b.addr())

	for i := 0; i < 10; i++ {
		code, body := get(t, ng.URL()+"/")
		if code != http.StatusOK {
			t.Fatalf("GET / = %d %q", code, body)
		}
		if want := "host=" + ng.Addr() + " "; !strings.Contains(body, want) {
			t.Fatalf("upstream saw %q, want the Host with its port (%q)", body, want)
		}
		if !strings.Contains(body, "xff=127.0.0.1") || !strings.Contains(body, "proto=http") {
			t.Fatalf("upstream saw %q, want X-Forwarded-For and X-Forwarded-Proto", body)
		}
	}
	if a.hits.Load() == 0 || b.hits.Load() == 0 {
		t.Fatalf("no round robin: a=%d b=%d", a.hits.Load(), b.hits.Load())
	}

	// One upstream goes away: every request still succeeds, on the other.
	a.srv.Close()
	before := b.hits.Load()
	for i := 0; i < 10; i++ {
		code, body := get(t, ng.URL()+"/")
		if code != http.StatusOK || !strings.HasPrefix(body, "b ") {
			t.Fatalf("after upstream a died: GET / = %d %q", code, body)
		}
	}
	if got := b.hits.Load() - before; got != 10 {
		t.Fatalf("b served %d of 10 requests", got)
	}
}

func TestWebsocketThroughNginx(t *testing.T) {
	a := newBackend(t, "a")
	ng := nginxtest.Start(t, a.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+ng.Addr()+"/ws", nil)
	if err != nil {
		t.Fatalf("dial through nginx: %v\n%s", err, ng.ErrorLog())
	}
	defer c.CloseNow()
	for i := 0; i < 3; i++ {
		if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(msg) != "a:hi" {
			t.Fatalf("echo = %q", msg)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func TestConfigKeepsTheShippedFile(t *testing.T) {
	conf, err := nginxtest.Config(deploy.NginxConf(), nginxtest.ConfigParams{
		Listen:    "127.0.0.1:9999",
		Upstreams: []string{"127.0.0.1:1", "127.0.0.1:2"},
		Dir:       "/x",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"server 127.0.0.1:1 max_fails=0;",
		"server 127.0.0.1:2 max_fails=0;",
		"listen 127.0.0.1:9999;",
		"pid /x/nginx.pid;",
		"proxy_temp_path /x/proxy_temp;",
		"proxy_http_version 1.1;",
		"proxy_set_header Connection $connection_upgrade;",
		"proxy_read_timeout 1h;",
		"proxy_next_upstream error timeout;",
		"proxy_set_header Host $http_host;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("generated config lacks %q", want)
		}
	}
	for _, bad := range []string{"/var/", "/run/", "127.0.0.1:3001", "listen 8080"} {
		if strings.Contains(conf, bad) {
			t.Errorf("generated config still has %q:\n%s", bad, conf)
		}
	}
}

func TestConfigRefusesOtherShapes(t *testing.T) {
	tests := []struct {
		name string
		conf string
	}{
		{"no http block", "events {}\n"},
		{"no upstream", "http {\n server {\n  listen 80;\n }\n}\n"},
		{"no listen", "http {\n upstream u {\n  server 127.0.0.1:1;\n }\n}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := nginxtest.Config(tt.conf, nginxtest.ConfigParams{Listen: "127.0.0.1:1", Upstreams: []string{"127.0.0.1:2"}, Dir: "/x"})
			if !errors.Is(err, nginxtest.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}
