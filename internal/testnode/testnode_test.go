package testnode_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/testnode"
)

func TestMain(m *testing.M) { testnode.Main(m) }

func TestNodeAndClient(t *testing.T) {
	n := testnode.Start(t, testnode.Options{Layer: "memory://"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if code, err := n.Ready(); err != nil || code != http.StatusOK {
		t.Fatalf("Ready() = %d, %v; want 200", code, err)
	}

	ada, err := testnode.Connect(ctx, n.URL(), "Ada", "Test Room")
	if err != nil {
		t.Fatal(err)
	}
	defer ada.Close(websocket.StatusNormalClosure)
	h, err := ada.Next(ctx)
	if err != nil || h.Type != "history" {
		t.Fatalf("first frame = %v, %v; want history", h, err)
	}
	if _, err := ada.Await(ctx, "users", func(f testnode.Frame) bool { return f.HasUser("Ada") }); err != nil {
		t.Fatal(err)
	}
	if err := ada.Send(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	m, err := ada.Await(ctx, "message", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.User != "Ada" || m.Text != "hello" || m.ID == "" || m.Time == "" {
		t.Fatalf("message = %v", m)
	}

	// Reconnecting with since gets an empty history.
	if err := ada.Dial(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	h, err = ada.Await(ctx, "history", nil)
	if err != nil || len(h.Messages) != 0 || h.Reset {
		t.Fatalf("history after resume = %v, %v; want empty, no reset", h, err)
	}

	// A client without a cookie is refused with 403.
	anon := ada.Tab()
	anon.Cookie = nil
	if err := anon.Dial(ctx, ""); testnode.HandshakeStatus(err) != http.StatusForbidden {
		t.Fatalf("dial without cookie: %v; want HTTP 403", err)
	}

	// SIGTERM closes sockets with 1012 and ends the process.
	n.Term()
	_, err = ada.Await(ctx, "never", nil)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("close status after SIGTERM = %v (%v); want 1012", got, err)
	}
	code, took, err := n.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("Wait = %d, %v, %v; want exit 0\n%s", code, took, err, n.Log())
	}
	if n.Running() {
		t.Fatal("Running after exit")
	}
}

func TestStartWithEnv(t *testing.T) {
	n := testnode.Start(t, testnode.Options{AddrFromEnv: true, Env: []string{"CHATTERPRO_LAYER=memory://"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := n.Get(ctx, "/healthz")
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %v, %v", r, err)
	}
	n.Kill()
	if n.Running() {
		t.Fatal("Running after Kill")
	}
	n.Restart(t)
	if code, err := n.Ready(); err != nil || code != http.StatusOK {
		t.Fatalf("Ready() after Restart = %d, %v", code, err)
	}
}
