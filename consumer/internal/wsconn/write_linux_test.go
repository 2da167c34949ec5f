//go:build linux

package wsconn

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// sendPing writes a whole ping frame and remembers it until a pong; it
// never waits: not for a batch under way, not for a peer that reads
// nothing. What it does write is never cut into a batch.
func TestSendPingNeverWaits(t *testing.T) {
	server, client := tcpPair(t)
	s := &sock{Conn: server, raw: rawConnOf(server), timeout: 5 * time.Second}
	r := bufio.NewReader(client)
	if ok, err := s.sendPing(); !ok || err != nil {
		t.Fatalf("sendPing on an idle socket = %v, %v; want it sent", ok, err)
	}
	if op, p, err := readFrame(r); err != nil || op != 0x9 || len(p) != 0 {
		t.Fatalf("read opcode %d, payload %q, %v; want an empty ping", op, p, err)
	}
	if s.pingAt.Load() == 0 {
		t.Fatal("the ping is not remembered as unanswered")
	}
	s.onPong(context.Background(), nil)
	if s.pingAt.Load() != 0 {
		t.Fatal("the pong did not clear the unanswered ping")
	}

	// A peer that reads nothing: batches fill the socket's buffers until
	// one blocks; sendPing returns at once all the while.
	big := bytes.Repeat([]byte("x"), 64<<10)
	written := make(chan int, 1)
	go func() {
		n := 0
		for s.writeFrames([][]byte{big}) == nil {
			n++
			if n == 200 { // 12.5 MiB: more than any socket buffer
				break
			}
		}
		written <- n
	}()
	sent, refused := 0, 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		ok, err := s.sendPing()
		if d := time.Since(t0); d > 500*time.Millisecond {
			t.Fatalf("sendPing took %v", d)
		}
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			sent++
		} else {
			refused++
		}
		time.Sleep(time.Millisecond)
	}
	if refused == 0 {
		t.Fatalf("sendPing never declined while the peer read nothing (%d sent)", sent)
	}
	// Now the peer reads: every frame arrives whole, batches and pings.
	texts, pings := 0, 0
	for texts < 200 || pings < sent {
		op, p, err := readFrame(r)
		if err != nil {
			t.Fatalf("after %d texts and %d pings (%d sent): %v", texts, pings, sent, err)
		}
		switch {
		case op == 0x1 && len(p) == len(big):
			texts++
		case op == 0x9 && len(p) == 0:
			pings++
		default:
			t.Fatalf("frame with opcode %d and %d bytes", op, len(p))
		}
	}
	if n := <-written; n != 200 {
		t.Fatalf("%d batches written, want 200", n)
	}
}

// A ping after the socket has been quiet for longer than the write
// timeout goes out: the deadline armed by the last write has passed, and
// sendPing arms a new one (a socket that took it as a failed write would
// be dead for good).
func TestSendPingAfterQuietSpell(t *testing.T) {
	server, client := tcpPair(t)
	s := &sock{Conn: server, raw: rawConnOf(server), timeout: 20 * time.Millisecond}
	r := bufio.NewReader(client)
	if err := s.writeFrames([][]byte{[]byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if op, p, err := readFrame(r); err != nil || op != 0x1 || string(p) != "hello" {
		t.Fatalf("read opcode %d, payload %q, %v", op, p, err)
	}
	time.Sleep(60 * time.Millisecond) // three write timeouts: the armed deadline has passed
	if ok, err := s.sendPing(); !ok || err != nil {
		t.Fatalf("sendPing after a quiet spell = %v, %v; want it sent", ok, err)
	}
	if op, _, err := readFrame(r); err != nil || op != 0x9 {
		t.Fatalf("read opcode %d, %v; want a ping", op, err)
	}
	if err := s.writeFrames([][]byte{[]byte("after")}); err != nil {
		t.Fatalf("a write after the ping: %v", err)
	}
}
