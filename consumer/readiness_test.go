package consumer_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// These tests serve consumers over real sockets, where an idle connection
// has no reading goroutine: the server's poller starts one when bytes
// arrive (see package consumer/internal/poll).

type tcpServer struct {
	*socketServer
	disconn  chan consumer.StatusCode // each Disconnect's code
	channels chan string              // each connection's channel, once connected
}

// echoServer serves an echo consumer that also closes on a "bye" layer
// event and reports its channel and its Disconnect code.
func echoServer(t *testing.T, opts consumer.Options) *tcpServer {
	t.Helper()
	s := &tcpServer{disconn: make(chan consumer.StatusCode, 100), channels: make(chan string, 100)}
	cons := consumer.Funcs{
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("bye", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				c.Close(4000, "bye")
				return nil
			})
			s.channels <- c.Channel()
			return nil
		},
		OnReceive: func(ctx context.Context, c *consumer.Conn, text []byte) error { return c.Send(text) },
		OnDisconnect: func(ctx context.Context, c *consumer.Conn, code consumer.StatusCode) {
			s.disconn <- code
		},
	}
	s.socketServer = serveSockets(t, opts, func() consumer.Consumer { return cons })
	return s
}

func (s *tcpServer) expectDisconnect(t *testing.T, want consumer.StatusCode) {
	t.Helper()
	select {
	case code := <-s.disconn:
		if code != want {
			t.Fatalf("Disconnect got %d, want %d", code, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no Disconnect (want %d)", want)
	}
}

// send sends a layer event to the connection that connected last.
func (s *tcpServer) send(t *testing.T, typ string) {
	t.Helper()
	var ch string
	select {
	case ch = <-s.channels:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	m, _ := channellayer.NewMessage(typ, nil)
	if err := s.layer.Send(timeout(t), ch, m); err != nil {
		t.Fatal(err)
	}
}

// rawClient speaks the websocket protocol by hand, to control how the
// bytes are cut into TCP segments.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialRaw opens a websocket and writes after right behind the handshake
// request, in the same write.
func (s *tcpServer) dialRaw(t *testing.T, after []byte) *rawClient {
	t.Helper()
	nc, br := rawHandshake(t, s.hs.Listener.Addr().String(), after)
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, nc: nc, br: br}
}

const (
	opCont  = 0x0
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// clientFrame returns a masked frame as a client sends it.
func clientFrame(op byte, fin bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := []byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// write sends b in pieces of the given sizes (the rest in one), pausing
// between them so that each is a TCP segment of its own that the server
// reads alone.
func (c *rawClient) write(b []byte, pieces ...int) {
	c.t.Helper()
	for _, n := range pieces {
		n = min(n, len(b))
		if _, err := c.nc.Write(b[:n]); err != nil {
			c.t.Fatal(err)
		}
		b = b[n:]
		time.Sleep(5 * time.Millisecond) // real time between the pieces keeps them apart
	}
	if len(b) > 0 {
		if _, err := c.nc.Write(b); err != nil {
			c.t.Fatal(err)
		}
	}
}

// readFrame reads one frame from the server.
func (c *rawClient) readFrame() (op byte, payload []byte) {
	c.t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		io.ReadFull(c.br, ext[:])
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		io.ReadFull(c.br, ext[:])
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return h[0] & 0x0f, payload
}

func (c *rawClient) expect(op byte, payload string) {
	c.t.Helper()
	gotOp, got := c.readFrame()
	if gotOp != op || string(got) != payload {
		c.t.Fatalf("got frame %#x %.60q (%d bytes), want %#x %.60q (%d bytes)", gotOp, got, len(got), op, payload, len(payload))
	}
}

// expectClose reads the server's close frame and checks its code.
func (c *rawClient) expectClose(code consumer.StatusCode) {
	c.t.Helper()
	op, p := c.readFrame()
	if op != opClose || len(p) < 2 || consumer.StatusCode(binary.BigEndian.Uint16(p)) != code {
		c.t.Fatalf("got frame %#x %q, want a close frame with %d", op, p, code)
	}
}

func TestMessageSplitOverSegments(t *testing.T) {
	s := echoServer(t, consumer.Options{})
	c := s.dialRaw(t, nil)
	short := clientFrame(opText, true, []byte("hello"))
	long := clientFrame(opText, true, []byte(strings.Repeat("x", 300))) // 16-bit length
	c.write(short, 1, 1, 1, 1, 1, 1, 1, 1, 1)                           // byte by byte
	c.expect(opText, "hello")
	c.write(long, 1, 2, 3, 100) // cut inside the length, the mask, the payload
	c.expect(opText, strings.Repeat("x", 300))
	// Two messages in one segment, the second one cut short.
	two := append(clientFrame(opText, true, []byte("one")), clientFrame(opText, true, []byte("two"))...)
	c.write(two, len(two)-2)
	c.expect(opText, "one")
	c.expect(opText, "two")
}

// A ping between the fragments of a message is answered, and the message
// still arrives whole: a control frame inside a message is no place to stop
// reading.
func TestPingInsideFragmentedMessage(t *testing.T) {
	s := echoServer(t, consumer.Options{})
	c := s.dialRaw(t, nil)
	var b []byte
	b = append(b, clientFrame(opText, false, []byte("frag"))...)
	b = append(b, clientFrame(opPing, true, []byte("p1"))...)
	ping := len(b)
	b = append(b, clientFrame(opCont, true, []byte("mented"))...)
	c.write(b, ping, 3) // the ping ends a segment; the continuation comes later
	c.expect(opPong, "p1")
	c.expect(opText, "fragmented")
	// And a ping while idle: answered, and the connection is idle again.
	c.write(clientFrame(opPing, true, []byte("p2")), 2)
	c.expect(opPong, "p2")
	c.write(clientFrame(opText, true, []byte("after")))
	c.expect(opText, "after")
}

func TestFrameRightAfterHandshake(t *testing.T) {
	s := echoServer(t, consumer.Options{})
	// net/http reads the frame together with the request: no byte of it
	// is left on the socket to wake the poller.
	c := s.dialRaw(t, append(clientFrame(opText, true, []byte("early")), clientFrame(opText, true, []byte("bird"))...))
	c.expect(opText, "early")
	c.expect(opText, "bird")
	c.write(clientFrame(opText, true, []byte("later")))
	c.expect(opText, "later")
}

// Pings keep an idle connection open, and between pings it has no reader:
// the pong wakes one, which goes away again.
func TestPingPongOnIdleConnections(t *testing.T) {
	s := echoServer(t, consumer.Options{PingInterval: 20 * time.Millisecond, PingTimeout: 5 * time.Second})
	const n = 10
	var pings atomic.Int64
	var clients []*websocket.Conn
	got := make(chan string, n)
	for i := 0; i < n; i++ {
		ws, _, err := websocket.Dial(timeout(t), s.url, &websocket.DialOptions{
			OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		clients = append(clients, ws)
		go func() { // a client answers pings while it reads
			for {
				_, b, err := ws.Read(context.Background())
				if err != nil {
					return
				}
				got <- string(b)
			}
		}()
	}
	// A reader runs now and then, for a pong; if a pong left its reader
	// behind, there would be n of them all the time.
	least := n
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		least = min(least, serverReaders())
		switch {
		case pings.Load() < 3*n:
			return fmt.Errorf("%d pings to %d clients, pinging every 20ms; want every connection pinged a few times", pings.Load(), n)
		case least > 2:
			return fmt.Errorf("%d idle connections answering pings keep %d readers all the time, want none", n, least)
		}
		return nil
	}, "idle connections pinged, without readers")
	for i, ws := range clients {
		msg := fmt.Sprint("alive ", i)
		ws.Write(timeout(t), websocket.MessageText, []byte(msg))
		if b := <-got; b != msg {
			t.Fatalf("echo %q, want %q", b, msg)
		}
	}
	for _, ws := range clients {
		ws.Close(websocket.StatusNormalClosure, "")
		s.expectDisconnect(t, consumer.StatusNormal)
	}
}

// serverReaders counts the goroutines reading a connection.
func serverReaders() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "consumer.(*Conn).readReady(") + strings.Count(string(buf[:n]), "consumer.(*Conn).readLoop(")
}

// readerWaiting reports whether a server reader is blocked reading its
// socket.
func readerWaiting() bool {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "[IO wait") && (strings.Contains(g, "consumer.(*Conn).readReady(") || strings.Contains(g, "consumer.(*Conn).readLoop(")) {
			return true
		}
	}
	return false
}

// A peer that stops answering pings is closed with 1006, although its
// idle connection has nobody reading it.
func TestSilentPeerIsClosed(t *testing.T) {
	s := echoServer(t, consumer.Options{PingInterval: 20 * time.Millisecond, PingTimeout: 50 * time.Millisecond})
	c := s.dialRaw(t, nil)
	s.expectDisconnect(t, consumer.StatusAbnormal)
	for { // pings, then the end
		if _, err := c.br.ReadByte(); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("want the socket closed, got %v", err)
			}
			return
		}
	}
}

// A ping waits for its pong on no goroutine: peers that take their time
// to answer keep none waiting on the server, and are still pinged again
// once they have answered.
func TestPingsWaitOnNoGoroutine(t *testing.T) {
	s := echoServer(t, consumer.Options{PingInterval: 20 * time.Millisecond, PingTimeout: 10 * time.Second})
	const n = 5
	var cs []*rawClient
	for range n {
		cs = append(cs, s.dialRaw(t, nil))
	}
	// Each peer gets a ping, which it leaves unanswered for now.
	for _, c := range cs {
		c.expect(opPing, "")
	}
	time.Sleep(100 * time.Millisecond) // five ping intervals: time for waiting pings to show
	buf := make([]byte, 1<<20)
	if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "consumer.(*Conn).pingPeer(") {
		t.Fatalf("a goroutine waits for a pong:\n%s", st)
	}
	// Answered, each is pinged again within the next intervals.
	for _, c := range cs {
		c.write(clientFrame(opPong, true, nil))
	}
	for _, c := range cs {
		c.expect(opPing, "")
	}
}

// A peer that answers its pings stays connected and served, however long
// it is quiet: longer than the write timeout, and with pings checked
// before the next ones start.
func TestAnsweringPeerStaysThroughQuietSpells(t *testing.T) {
	s := echoServer(t, consumer.Options{PingInterval: 60 * time.Millisecond, PingTimeout: 30 * time.Millisecond, WriteTimeout: 20 * time.Millisecond})
	var pings atomic.Int64
	ws, _, err := websocket.Dial(timeout(t), s.url, &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	got := make(chan string, 1)
	go func() { // the client answers pings while it reads
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				close(got)
				return
			}
			got <- string(b)
		}
	}()
	// A first echo: the server's write arms the write deadline, which the
	// quiet spell then outlasts.
	if err := ws.Write(timeout(t), websocket.MessageText, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "first" {
		t.Fatalf("echo %q, want %q", b, "first")
	}
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		if n := pings.Load(); n < 8 {
			return fmt.Errorf("%d pings", n)
		}
		return nil
	}, "8 pings, each checked 30ms after it")
	if err := ws.Write(timeout(t), websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if b, ok := <-got; !ok || b != "still here" {
		t.Fatalf("echo %q (open %v), want %q", b, ok, "still here")
	}
}

func TestCloseWhileIdle(t *testing.T) {
	t.Run("server closes", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		ws, _, err := websocket.Dial(timeout(t), s.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		s.send(t, "bye") // a layer event makes the idle connection close
		_, _, err = ws.Read(timeout(t))
		if websocket.CloseStatus(err) != 4000 {
			t.Fatalf("client read %v, want close 4000", err)
		}
		s.expectDisconnect(t, 4000)
	})
	t.Run("server closes, client answers late", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		c := s.dialRaw(t, nil)
		s.send(t, "bye")
		c.expectClose(4000)
		time.Sleep(20 * time.Millisecond) // the answer comes late: time between the close and the answer is the case tested
		c.write(clientFrame(opClose, true, []byte{0x0f, 0xa0}))
		s.expectDisconnect(t, 4000)
	})
	t.Run("client closes", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		ws, _, err := websocket.Dial(timeout(t), s.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.Close(4001, "going")
		s.expectDisconnect(t, 4001)
	})
	t.Run("client vanishes", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		c := s.dialRaw(t, nil)
		<-s.channels // connected
		c.nc.Close()
		s.expectDisconnect(t, consumer.StatusAbnormal)
	})
	t.Run("shutdown", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		c := s.dialRaw(t, nil)
		<-s.channels
		done := make(chan error, 1)
		go func() { done <- s.srv.Shutdown(timeout(t)) }()
		c.expectClose(consumer.StatusServiceRestart)
		c.write(clientFrame(opClose, true, []byte{0x03, 0xf4})) // answer 1012
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		s.expectDisconnect(t, consumer.StatusServiceRestart)
	})
}

// A connection closed while its reader waits inside a message.
func TestCloseWhileReading(t *testing.T) {
	half := clientFrame(opText, true, []byte("never finished"))
	half = half[:len(half)-4]
	t.Run("shutdown", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		c := s.dialRaw(t, nil)
		c.write(half)
		testkit.Eventually(t, 5*time.Second, readerWaiting, "the reader waiting for the rest")
		done := make(chan error, 1)
		go func() { done <- s.srv.Shutdown(timeout(t)) }()
		c.expectClose(consumer.StatusServiceRestart)
		c.nc.Close()
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		s.expectDisconnect(t, consumer.StatusServiceRestart)
	})
	t.Run("client vanishes", func(t *testing.T) {
		s := echoServer(t, consumer.Options{})
		c := s.dialRaw(t, nil)
		c.write(half)
		testkit.Eventually(t, 5*time.Second, readerWaiting, "the reader waiting for the rest")
		c.nc.Close()
		s.expectDisconnect(t, consumer.StatusAbnormal)
	})
	t.Run("too big", func(t *testing.T) {
		s := echoServer(t, consumer.Options{ReadLimit: 100})
		c := s.dialRaw(t, nil)
		c.write(clientFrame(opText, true, make([]byte, 1000)), 50)
		c.expectClose(consumer.StatusTooBig)
		s.expectDisconnect(t, consumer.StatusTooBig)
	})
}

// A connection that just sent keeps its reader a while (readLinger) for the
// next message, then gives it up.
func TestReaderLingersAfterAMessage(t *testing.T) {
	t.Cleanup(consumer.SetReadLinger(200 * time.Millisecond))
	s := echoServer(t, consumer.Options{PingInterval: -1})
	c := s.dialRaw(t, nil)
	for i := 0; i < 3; i++ {
		msg := fmt.Sprint("chatty ", i)
		c.write(clientFrame(opText, true, []byte(msg)))
		c.expect(opText, msg)
		if n := serverReaders(); n != 1 {
			t.Fatalf("%d readers right after a message, want the one that waits for the next", n)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return serverReaders() == 0 }, "the reader of a quiet connection going away")
	c.write(clientFrame(opText, true, []byte("back")))
	c.expect(opText, "back")
}
