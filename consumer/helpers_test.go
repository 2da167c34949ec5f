package consumer_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
)

// socketServer serves consumers over real loopback sockets, on a memory
// layer: the path the server takes in production, poller included.
type socketServer struct {
	srv   *consumer.Server
	layer channellayer.Layer
	hs    *httptest.Server
	url   string // ws://host:port/ws
}

// serveSockets serves a consumer made by f for every websocket request.
// The cleanup shuts the server down, which must go cleanly.
func serveSockets(tb testing.TB, opts consumer.Options, f func() consumer.Consumer) *socketServer {
	tb.Helper()
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	opts.Layer = layer
	srv, err := consumer.NewServer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.ServeWebSocket(w, r, consumer.Scope{Path: r.URL.Path}, f())
	}))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		hs.Close()
		layer.Close(ctx)
	})
	return &socketServer{srv: srv, layer: layer, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
}

// rawHandshake opens a websocket by hand and writes after right behind the
// handshake request, in the same write. Reading it then costs nothing but
// the read: no client library frames or allocates anything.
func rawHandshake(tb testing.TB, addr string, after []byte) (net.Conn, *bufio.Reader) {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), after...)); err != nil {
		nc.Close()
		tb.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		tb.Fatalf("handshake: %v, %v", resp, err)
	}
	nc.SetDeadline(time.Time{})
	return nc, br
}
