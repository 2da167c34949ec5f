package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/exampletest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestNotify: a notification posted on one node reaches both of ada's tabs,
// on two nodes, and nobody else.
func TestNotify(t *testing.T) {
	newApp := func(srv *consumer.Server, l channellayer.Layer) (http.Handler, error) { return newApp(srv, l, "tok") }
	exampletest.Backends(t, consumer.Options{}, newApp, func(t *testing.T, node func() *exampletest.Node) {
		ctx := exampletest.Context(t, 10*time.Second)
		a, b := node(), node()
		dial := func(n *exampletest.Node, user string) *consumertest.Client {
			c, _, err := n.Handler.Dial(ctx, "/ws/notify/?user="+user, consumertest.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		tab1, tab2, bob := dial(a, "ada"), dial(b, "ada"), dial(a, "bob")
		post := func(token, body string) int {
			req := httptest.NewRequest("POST", "/notify/ada", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			b.HTTP.ServeHTTP(rec, req)
			return rec.Code
		}
		if code := post("wrong", `{"text":"x"}`); code != http.StatusUnauthorized {
			t.Fatalf("wrong token: %d, want 401", code)
		}
		if code := post("tok", `{"text":"your build passed"}`); code != http.StatusAccepted {
			t.Fatalf("POST /notify/ada: %d, want 202", code)
		}
		for i, tab := range []*consumertest.Client{tab1, tab2} {
			b, err := tab.Receive(ctx)
			if err != nil || string(b) != `{"type":"notify","text":"your build passed"}` {
				t.Fatalf("tab %d got %s, %v", i+1, b, err)
			}
		}
		// Bob gets nothing: his next frame is the answer to his own ping.
		bob.SendText(ctx, `{"type":"ping"}`)
		if b, err := bob.Receive(ctx); err != nil || string(b) != `{"type":"pong"}` {
			t.Fatalf("bob got %s, %v; want only his pong", b, err)
		}
	})
}
