//go:build linux

package poll_test

import (
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/consumer/internal/poll"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); sc.Close() })
	return sc.(*net.TCPConn), client
}

func rawConn(t *testing.T, c syscall.Conn) syscall.RawConn {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func expectWake(t *testing.T, woke chan struct{}, what string) {
	t.Helper()
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake-up after %s", what)
	}
}

// An armed socket wakes its reader once per arming: when bytes arrive, when
// the peer closes, and when the connection's own side calls Wake.
func TestArmAndWake(t *testing.T) {
	p := poll.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	server, client := tcpPair(t)
	woke := make(chan struct{}, 4)
	var h poll.Handle
	if !p.Watch(&h, rawConn(t, server), func() { woke <- struct{}{} }) {
		t.Fatal("Watch failed on a TCP socket")
	}
	defer h.Forget()

	if !h.Arm() {
		t.Fatal("Arm failed")
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	expectWake(t, woke, "bytes arrived")
	var b [1]byte
	if _, err := server.Read(b[:]); err != nil {
		t.Fatal(err)
	}

	// Not armed: nothing wakes, not even Wake.
	h.Wake()
	if !h.Arm() {
		t.Fatal("Arm failed")
	}
	h.Wake() // the connection closing on its own side
	expectWake(t, woke, "Wake")
	h.Wake() // cleared: a second Wake starts nothing
	select {
	case <-woke:
		t.Fatal("a second reader was started for one arming")
	case <-time.After(50 * time.Millisecond):
	}

	if !h.Arm() {
		t.Fatal("Arm failed")
	}
	client.Close()
	expectWake(t, woke, "the peer closed")
}

// A socket that cannot be watched leaves the reading to the caller.
func TestWatchRefusesNil(t *testing.T) {
	p := poll.New(slog.Default())
	var h poll.Handle
	if p.Watch(&h, nil, func() {}) {
		t.Fatal("Watch accepted a nil socket")
	}
	h.Forget() // never watched: does nothing
	h.Wake()
}
