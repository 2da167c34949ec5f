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

// With a ping interval, a batch written in the half interval before the
// next ping is due ends with that ping, once; the tick that comes then
// writes none, and the ping is awaited as if the tick had sent it. Outside
// the window a batch carries nothing.
func TestPingRidesOnBatches(t *testing.T) {
	server, client := tcpPair(t)
	// Ticks are the test's calls to sendPing; the test sets the times
	// they would find.
	const every = 2 * time.Hour
	s := &sock{Conn: server, raw: rawConnOf(server), timeout: 5 * time.Second, every: int64(every), window: int64(every / 2)}
	client.SetReadDeadline(time.Now().Add(20 * time.Second)) // a frame that never comes fails the test
	r := bufio.NewReader(client)
	want := func(what string, wantOp byte, wantP string) {
		t.Helper()
		op, p, err := readFrame(r)
		if err != nil || op != wantOp || string(p) != wantP {
			t.Fatalf("%s: read opcode %d, payload %q, %v; want opcode %d, %q", what, op, p, err, wantOp, wantP)
		}
	}
	if ok, err := s.sendPing(); !ok || err != nil {
		t.Fatalf("the first tick's sendPing = %v, %v; want it sent", ok, err)
	}
	want("the first tick", 0x9, "")
	s.onPong(context.Background(), nil)

	// Just after a tick, the next ping is an interval away: a batch goes alone.
	if err := s.writeFrames([][]byte{[]byte("early")}); err != nil {
		t.Fatal(err)
	}
	want("a batch just after the tick", 0x1, "early")
	if s.pingAt.Load() != 0 {
		t.Fatal("a batch outside the window counted as a ping")
	}

	// Later, as if most of an interval had passed since that tick: the
	// next ping is due within the window, and the batch carries it.
	now := time.Since(epoch)
	s.pingSentAt.Store(int64(now - every*3/4))
	s.dueAt.Store(int64(now + every/4))
	if err := s.writeFrames([][]byte{[]byte("late")}); err != nil {
		t.Fatal(err)
	}
	want("a batch in the window", 0x1, "late")
	want("the ping the batch carried", 0x9, "")
	if s.pingAt.Load() == 0 {
		t.Fatal("the ping a batch carried is not awaited")
	}
	if err := s.writeFrames([][]byte{[]byte("again")}); err != nil {
		t.Fatal(err)
	}
	want("a second batch in the window (no second ping)", 0x1, "again")

	// The tick finds its ping sent, writes nothing, and sets the next due.
	before := s.dueAt.Load()
	if ok, err := s.sendPing(); !ok || err != nil {
		t.Fatalf("the tick after a carried ping: sendPing = %v, %v; want it counted as sent", ok, err)
	}
	if s.dueAt.Load() <= before {
		t.Error("the tick did not move the next ping's due time")
	}
	if err := s.writeFrames([][]byte{[]byte("after the tick")}); err != nil {
		t.Fatal(err)
	}
	want("the frame after the tick (it wrote no ping)", 0x1, "after the tick")
	if s.pingAt.Load() == 0 {
		t.Fatal("the carried ping's pong is no longer awaited")
	}
	s.onPong(context.Background(), nil)
	if s.pingAt.Load() != 0 {
		t.Fatal("the pong did not clear the carried ping")
	}

	// A tick that comes late (a quarter interval after its due time)
	// still finds the ping a batch carried early in the window: it
	// writes none.
	now = time.Since(epoch)
	s.dueAt.Store(int64(now - every/4))
	s.pingSentAt.Store(int64(now - every*6/10)) // after the window began, more than half an interval ago
	if ok, err := s.sendPing(); !ok || err != nil {
		t.Fatalf("a late tick after a carried ping: sendPing = %v, %v; want it counted as sent", ok, err)
	}
	if err := s.writeFrames([][]byte{[]byte("after the late tick")}); err != nil {
		t.Fatal(err)
	}
	want("the frame after the late tick (it wrote no ping)", 0x1, "after the late tick")
}
