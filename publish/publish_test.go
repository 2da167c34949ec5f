package publish_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/publish"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// nodes returns two layers standing for two nodes: on one memory layer, and
// on one real redis-server.
func nodes(t *testing.T) map[string][2]channellayer.Layer {
	ctx := context.Background()
	mem, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { mem.Close(ctx) })
	srv := redistest.Start(t)
	open := func() channellayer.Layer {
		client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { client.Close() })
		l, err := channellayer.NewRedis(ctx, client, channellayer.RedisOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(ctx) })
		return l
	}
	return map[string][2]channellayer.Layer{"memory": {mem, mem}, "redis": {open(), open()}}
}

func TestHandler(t *testing.T) {
	for name, pair := range nodes(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// A member of "alerts" on one node, the API on the other.
			member, api := pair[0], pair[1]
			ch, err := member.NewChannel(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := member.GroupAdd(ctx, "alerts", ch); err != nil {
				t.Fatal(err)
			}
			h, err := publish.New(publish.Options{Layer: api, Token: "s3cret", MaxBytes: 256})
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.Handle("POST /api/publish/{group}", h)
			hs := httptest.NewServer(mux)
			defer hs.Close()

			post := func(path, token, body string) (int, string) {
				req, _ := http.NewRequest("POST", hs.URL+path, strings.NewReader(body))
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			tests := []struct {
				name, token, body string
				status            int
			}{
				{"no token", "", `{"type":"alert"}`, 401},
				{"wrong token", "guess", `{"type":"alert"}`, 401},
				{"not json", "s3cret", `hello`, 400},
				{"no type", "s3cret", `{"text":"hi"}`, 400},
				{"too big", "s3cret", `{"type":"alert","text":"` + strings.Repeat("x", 300) + `"}`, 413},
				{"ok", "s3cret", `{"type":"alert","text":"disk full"}`, 202},
			}
			for _, tt := range tests {
				if status, body := post("/api/publish/alerts", tt.token, tt.body); status != tt.status {
					t.Errorf("%s: %d %s, want %d", tt.name, status, body, tt.status)
				}
			}
			m, err := member.Receive(ctx, ch)
			if err != nil || m.Type != "alert" || string(m.Body) != `{"type":"alert","text":"disk full"}` {
				t.Fatalf("member got %q %s, %v; want the alert", m.Type, m.Body, err)
			}
			short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel2()
			if m, err := member.Receive(short, ch); err == nil {
				t.Fatalf("a refused request was delivered: %s", m.Body)
			}
		})
	}
}

func TestNewRefusesAnEmptyToken(t *testing.T) {
	mem, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	defer mem.Close(context.Background())
	if _, err := publish.New(publish.Options{Layer: mem}); err == nil {
		t.Fatal("New without a token succeeded")
	}
}

func TestAuthorized(t *testing.T) {
	tests := []struct {
		name, header, token string
		want                bool
	}{
		{"the token", "Bearer s3cret", "s3cret", true},
		{"scheme in any case", "bearer s3cret", "s3cret", true},
		{"spaces around the token", "Bearer  s3cret ", "s3cret", true},
		{"no header", "", "s3cret", false},
		{"wrong token", "Bearer guess", "s3cret", false},
		{"a prefix of the token", "Bearer s3c", "s3cret", false},
		{"the token and more", "Bearer s3cret2", "s3cret", false},
		{"other scheme", "Basic s3cret", "s3cret", false},
		{"no scheme", "s3cret", "s3cret", false},
		{"empty token", "Bearer ", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/api/publish/alerts", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := publish.Authorized(r, tt.token); got != tt.want {
				t.Fatalf("Authorized(%q, %q) = %v, want %v", tt.header, tt.token, got, tt.want)
			}
		})
	}
}
