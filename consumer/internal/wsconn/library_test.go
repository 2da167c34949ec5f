package wsconn

// These tests pin every behaviour of github.com/coder/websocket that this
// package (and the consumer runtime above it) relies on beyond the
// library's documented API. Each names the code that depends on it. If a
// library upgrade fails one, that code must change with it.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// server accepts websockets with Accept and hands each *Conn to the test.
type server struct {
	url   string
	addr  string
	conns chan *Conn
}

func serve(t *testing.T, opts Options) *server {
	t.Helper()
	s := &server{conns: make(chan *Conn, 16)}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, opts)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		s.conns <- c
	}))
	t.Cleanup(func() {
		hs.Close()
		close(s.conns)
		for c := range s.conns {
			c.CloseNow()
		}
	})
	s.addr = strings.TrimPrefix(hs.URL, "http://")
	s.url = "ws://" + s.addr
	return s
}

func (s *server) next(t *testing.T) *Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.CloseNow() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial opens a client with the library itself.
func (s *server) dial(t *testing.T) (*websocket.Conn, *Conn) {
	t.Helper()
	ws, _, err := websocket.Dial(testCtx(t), s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(1 << 20)
	return ws, s.next(t)
}

// rawDial opens a client by hand: the test writes and reads raw frames.
func (s *server) rawDial(t *testing.T) (net.Conn, *bufio.Reader, *Conn) {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	return nc, br, s.next(t)
}

// maskedFrame is a client frame (masked, final) with opcode op.
func maskedFrame(op byte, payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, key[:]...)
	for i, x := range payload {
		b = append(b, x^key[i%4])
	}
	return b
}

// Hijack: Accept hijacks through the ResponseWriter it is given, keeps the
// net.Conn and the bufio.Reader that Hijack returns, and reads only through
// that reader (so sock.br.Buffered says what the library holds: the
// boundary logic of read.go depends on it).
func TestLibraryReadsThroughTheHijackedReader(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	nc, _, c := s.rawDial(t)
	if c.s.Conn == nil || c.s.br == nil {
		t.Fatal("the library did not hijack through the writer given to Accept")
	}
	// Two messages in one write: reading the first leaves the second in
	// the library's reader, which must be ours.
	two := append(maskedFrame(0x1, []byte("a")), maskedFrame(0x1, []byte("b"))...)
	if _, err := nc.Write(two); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(msg) != "a" {
		t.Fatalf("Read: %v %q %v", typ, msg, err)
	}
	if got, want := c.s.br.Buffered(), len(two)/2; got != want {
		t.Fatalf("after the first message the hijacked reader holds %d bytes, want %d (the second message)", got, want)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "b" {
		t.Fatalf("second Read: %q %v", msg, err)
	}
}

// Accept leaves nothing between the library's reader and the sock (the
// library wraps its source in an io.MultiReader at the handshake; Accept
// takes it out): wrappers that every idle connection would keep.
func TestLibraryReaderReadsTheSock(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	_, _, c := s.rawDial(t)
	rd := reflect.ValueOf(c.s.br).Elem().FieldByName("rd")
	if !rd.IsValid() || rd.IsNil() || rd.Elem().Type() != reflect.TypeOf(c.s) || rd.Elem().Pointer() != reflect.ValueOf(c.s).Pointer() {
		t.Fatalf("the library's reader reads from %v, want the sock itself", rd)
	}
}

// Wire format: the text frames WriteFrames builds itself (unmasked, final,
// with each of the three length encodings) are read by the library as the
// same text messages.
func TestOwnFramesAreReadByTheLibrary(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	ws, c := s.dial(t)
	if !c.OwnWrites() {
		t.Fatal("OwnWrites is off with a write timeout")
	}
	var texts [][]byte
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		texts = append(texts, bytes.Repeat([]byte{'a' + byte(n%26)}, n))
	}
	if err := c.WriteFrames(texts); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i, want := range texts {
		typ, got, err := ws.Read(ctx)
		if err != nil || typ != websocket.MessageText || !bytes.Equal(got, want) {
			t.Fatalf("message %d: type %v, %d bytes, %v; want text of %d bytes", i, typ, len(got), err, len(want))
		}
	}
}

// Control frames: the library writes each control frame whole, through the
// net.Conn Hijack returned, and flushes it before the call returns, so the
// sock never stops mid-frame between writes (a batch would wait for the
// rest). Its close frame is seen, after which WriteFrames refuses.
func TestLibraryWritesControlFramesWhole(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	nc, br, c := s.rawDial(t)
	ctx := testCtx(t)
	// A ping with the longest payload: the pong is bigger than the
	// library's 32-byte write buffer.
	payload := bytes.Repeat([]byte{'p'}, 125)
	if _, err := nc.Write(append(maskedFrame(0x9, payload), maskedFrame(0x1, []byte("after"))...)); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "after" {
		t.Fatalf("Read: %q %v", msg, err)
	}
	op, got, err := readFrame(br)
	if err != nil || op != 0xA || !bytes.Equal(got, payload) {
		t.Fatalf("pong: opcode %d, %q, %v", op, got, err)
	}
	c.s.mu.Lock()
	mid := c.s.lib.mid()
	c.s.mu.Unlock()
	if mid {
		t.Fatal("after the pong the library's output stopped inside a frame")
	}

	// The close frame: written by Close, seen by the sock.
	closed := make(chan error, 1)
	go func() { closed <- c.Close(websocket.StatusNormalClosure, "bye") }()
	op, got, err = readFrame(br)
	if err != nil || op != 0x8 || string(got[2:]) != "bye" || int(got[0])<<8|int(got[1]) != 1000 {
		t.Fatalf("close frame: opcode %d, %q, %v", op, got, err)
	}
	if err := c.WriteFrames([][]byte{[]byte("late")}); err == nil {
		t.Fatal("WriteFrames after the library's close frame: no error")
	}
	// Close reads the peer's answer itself (no reader runs): it returns
	// nil once the peer echoes the code.
	if _, err := nc.Write(maskedFrame(0x8, []byte{0x03, 0xe8})); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close after the peer's answer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not read the peer's close frame")
	}
}

// Close status: after the peer's close frame, Read fails with an error for
// which CloseStatus gives the peer's code (consumer's received); after the
// peer vanished without one, CloseStatus gives -1 (1006).
func TestCloseStatusOfRead(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	ws, c := s.dial(t)
	go ws.Close(4000, "client leaves") // waits for our answer, which Read writes
	_, _, err := c.Read(testCtx(t))
	if got := websocket.CloseStatus(err); got != 4000 {
		t.Fatalf("CloseStatus after the peer's close frame = %d (%v), want 4000", got, err)
	}

	nc, _, c2 := s.rawDial(t)
	nc.Close()
	_, _, err = c2.Read(testCtx(t))
	if err == nil || websocket.CloseStatus(err) != -1 {
		t.Fatalf("Read after the peer vanished: %v (CloseStatus %d), want an error with -1", err, websocket.CloseStatus(err))
	}
}

// Read limit: a message of ReadLimit bytes is read; one byte more fails
// Read with an error wrapping ErrMessageTooBig, and the library itself has
// sent the close frame 1009 (so the consumer closes as if the peer had,
// writing nothing more).
func TestReadLimit(t *testing.T) {
	const limit = 100
	s := serve(t, Options{ReadLimit: limit, WriteTimeout: 5 * time.Second})
	nc, br, c := s.rawDial(t)
	ctx := testCtx(t)
	if _, err := nc.Write(maskedFrame(0x1, bytes.Repeat([]byte{'x'}, limit))); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || len(msg) != limit {
		t.Fatalf("a message at the limit: %d bytes, %v", len(msg), err)
	}
	if _, err := nc.Write(maskedFrame(0x1, bytes.Repeat([]byte{'x'}, limit+1))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("a message over the limit: %v, want ErrMessageTooBig", err)
	}
	op, got, err := readFrame(br)
	if err != nil || op != 0x8 || len(got) < 2 || int(got[0])<<8|int(got[1]) != 1009 {
		t.Fatalf("after a message over the limit the peer got opcode %d, %q, %v; want a 1009 close frame", op, got, err)
	}
}

// Ping and pong: Ping returns once the pong is read by someone reading;
// the pong hook runs for it. The ping hook runs for the peer's ping and,
// returning true, lets the library answer with a pong.
func TestPingPong(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	ws, c := s.dial(t)
	ctx := testCtx(t)
	clientRead := make(chan error, 1)
	go func() { _, _, err := ws.Read(ctx); clientRead <- err }() // answers our pings
	serverRead := make(chan error, 1)
	go func() { _, _, err := c.Read(ctx); serverRead <- err }() // reads the pongs
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("server Ping: %v", err)
	}
	if err := ws.Ping(ctx); err != nil {
		t.Fatalf("client Ping (answered by the ping hook's true): %v", err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	<-serverRead
	<-clientRead
}

// idleDial opens a raw client to a server whose connection has a socket
// to watch (idle reads need one).
func idleDial(t *testing.T) (net.Conn, *bufio.Reader, *Conn, context.Context) {
	t.Helper()
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	nc, br, c := s.rawDial(t)
	if c.RawConn() == nil {
		t.Fatal("no socket to watch: idle reads are not tested")
	}
	return nc, br, c, testCtx(t)
}

// Idle reads: when the net.Conn's Read fails at a frame boundary, Reader
// fails with an error that wraps it (errors.Is) and the connection stays
// usable: the next Reader reads the next message. The ping and pong hooks
// run after the control frame's payload was read, so a ping alone leaves
// the reader at a boundary and ReadIdle returns ErrIdle after answering it.
// This is how a watched connection gives its socket back to the poller.
func TestIdleReadLeavesTheConnUsable(t *testing.T) {
	nc, br, c, ctx := idleDial(t)
	if _, _, err := c.ReadIdle(ctx, 0); !errors.Is(err, ErrIdle) {
		t.Fatalf("ReadIdle on a quiet socket: %v, want ErrIdle", err)
	}
	// A ping alone: ReadIdle reads it, the library answers, and the read
	// ends at the boundary after it (waiting out the linger).
	if _, err := nc.Write(maskedFrame(0x9, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadIdle(ctx, 500*time.Millisecond); !errors.Is(err, ErrIdle) {
		t.Fatalf("ReadIdle over a ping: %v, want ErrIdle", err)
	}
	if op, p, err := readFrame(br); err != nil || op != 0xA || string(p) != "hi" {
		t.Fatalf("pong: %d %q %v", op, p, err)
	}
	if _, err := nc.Write(maskedFrame(0x1, []byte("next"))); err != nil {
		t.Fatal(err)
	}
	_, msg, err := c.ReadIdle(ctx, 5*time.Second)
	if err != nil || string(msg) != "next" {
		t.Fatalf("ReadIdle after ErrIdle: %q %v; want the next message", msg, err)
	}
}

// No goroutine per connection: the library starts none for an accepted
// connection that nobody reads (the consumer's idle connections keep no
// goroutine at all).
func TestNoGoroutinePerConnection(t *testing.T) {
	s := serve(t, Options{ReadLimit: 1 << 10, WriteTimeout: 5 * time.Second})
	s.rawDial(t) // warm up the test server
	base := runtime.NumGoroutine()
	const n = 20
	for range n {
		s.rawDial(t)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Each connection leaves at most the client's nothing and the
		// server's nothing: allow a few for the test server itself.
		got := runtime.NumGoroutine()
		if got-base < n/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections idle: %d goroutines more than with one", n, got-base)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The close codes package consumer names after the library's.
func TestStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		got  websocket.StatusCode
		want int
	}{
		{websocket.StatusNormalClosure, 1000}, {websocket.StatusGoingAway, 1001},
		{websocket.StatusUnsupportedData, 1003}, {websocket.StatusAbnormalClosure, 1006},
		{websocket.StatusPolicyViolation, 1008}, {websocket.StatusMessageTooBig, 1009},
		{websocket.StatusInternalError, 1011}, {websocket.StatusServiceRestart, 1012},
		{websocket.StatusTryAgainLater, 1013},
	} {
		if int(tc.got) != tc.want {
			t.Errorf("%v = %d, want %d", tc.got, int(tc.got), tc.want)
		}
	}
}

// Pongs to SendPing's pings are taken before the library is asked for a
// message: ReadIdle returns ErrIdle with the ping answered, a message that
// came in the same read is still read whole, and a pong with a payload (the
// library's own Ping) still reaches the library.
func TestIdleReadTakesOwnPongs(t *testing.T) {
	nc, br, c, ctx := idleDial(t)
	ping := func() {
		t.Helper()
		if ok, err := c.SendPing(); !ok || err != nil {
			t.Fatalf("SendPing = %v, %v", ok, err)
		}
		if op, p, err := readFrame(br); err != nil || op != 0x9 || len(p) != 0 {
			t.Fatalf("ping: %d %q %v", op, p, err)
		}
	}
	readIdle := func(what string) []byte {
		t.Helper()
		for {
			_, msg, err := c.ReadIdle(ctx, 0)
			switch {
			case err == nil:
				return msg
			case !errors.Is(err, ErrIdle):
				t.Fatalf("ReadIdle, waiting for %s: %v", what, err)
			case c.Unanswered() == 0 && what == "the pong":
				return nil
			case ctx.Err() != nil:
				t.Fatalf("no %s", what)
			}
		}
	}

	ping()
	if _, err := nc.Write(maskedFrame(0xA, nil)); err != nil {
		t.Fatal(err)
	}
	readIdle("the pong")

	ping()
	both := append(maskedFrame(0xA, nil), maskedFrame(0x1, []byte("after"))...)
	if _, err := nc.Write(both); err != nil {
		t.Fatal(err)
	}
	if msg := readIdle("the message after the pong"); string(msg) != "after" || c.Unanswered() != 0 {
		t.Fatalf("read %q, unanswered %v; want the message, the ping answered", msg, c.Unanswered())
	}

	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(ctx) }()
	op, p, err := readFrame(br)
	if err != nil || op != 0x9 || len(p) == 0 {
		t.Fatalf("the library's ping: %d %q %v", op, p, err)
	}
	if _, err := nc.Write(append(maskedFrame(0xA, p), maskedFrame(0x1, []byte("last"))...)); err != nil {
		t.Fatal(err)
	}
	if msg := readIdle("the message after the library's pong"); string(msg) != "last" {
		t.Fatalf("read %q", msg)
	}
	if err := <-pinged; err != nil {
		t.Fatalf("the library's Ping: %v", err)
	}
}

// A ping by SendPing and its pong read by ReadIdle allocate 8 times (the
// test's ping included); with the pong handed to the library, 37 (a timer,
// contexts and wrapped errors).
func TestIdleReadOfOwnPongAllocatesLittle(t *testing.T) {
	nc, _, c, ctx := idleDial(t)
	pong := maskedFrame(0xA, nil)
	reads := 0
	allocs := testing.AllocsPerRun(200, func() {
		if ok, err := c.SendPing(); !ok || err != nil {
			t.Fatalf("SendPing = %v, %v", ok, err)
		}
		if _, err := nc.Write(pong); err != nil {
			t.Fatal(err)
		}
		for c.Unanswered() != 0 && ctx.Err() == nil {
			if _, _, err := c.ReadIdle(ctx, 0); !errors.Is(err, ErrIdle) {
				t.Fatalf("ReadIdle: %v", err)
			}
			reads++
		}
	})
	if allocs > 12 {
		t.Errorf("%.1f allocations per ping and pong (%d reads for 201), want at most 12", allocs, reads)
	}
}

// A message read by ReadIdle costs its own size: the bytes returned have
// no spare capacity (io.ReadAll's would have 512), also when the message
// came while the read lingered for it.
func TestIdleReadReturnsExactSize(t *testing.T) {
	nc, _, c, ctx := idleDial(t)
	msg := strings.Repeat("m", 100)
	if _, err := nc.Write(maskedFrame(0x1, []byte(msg))); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.ReadIdle(ctx, 0)
	if err != nil || string(got) != msg {
		t.Fatalf("ReadIdle: %q %v", got, err)
	}
	if cap(got) != len(got) {
		t.Errorf("a message of %d bytes came in a buffer of %d", len(got), cap(got))
	}
	// A lingering read at a boundary waits for the next message.
	write := time.AfterFunc(100*time.Millisecond, func() { _, _ = nc.Write(maskedFrame(0x1, []byte("late"))) })
	defer write.Stop()
	_, got, err = c.ReadIdle(ctx, 5*time.Second)
	if err != nil || string(got) != "late" || cap(got) != len(got) {
		t.Fatalf("lingering ReadIdle: %q (cap %d) %v; want the late message, exactly sized", got, cap(got), err)
	}
	// And gives up with ErrIdle when nothing comes within the linger.
	start := time.Now()
	if _, _, err := c.ReadIdle(ctx, 100*time.Millisecond); !errors.Is(err, ErrIdle) {
		t.Fatalf("lingering ReadIdle on a quiet socket: %v, want ErrIdle", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("the read gave up after %v, before its linger of 100ms", waited)
	}
}

// readMessage returns every byte of messages shorter and longer than its
// pooled buffer, read in pieces, each in a slice of exactly its size.
func TestReadMessage(t *testing.T) {
	for _, n := range []int{0, 1, 100, readBufSize - 1, readBufSize, readBufSize + 1, 3*readBufSize + 7} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte('a' + i%26)
		}
		got, err := readMessage(iotest.HalfReader(bytes.NewReader(want)))
		if err != nil || !bytes.Equal(got, want) || got == nil {
			t.Fatalf("%d bytes: got %d (%v)", n, len(got), err)
		}
		if cap(got) != n {
			t.Errorf("%d bytes in a slice of capacity %d", n, cap(got))
		}
	}
	boom := errors.New("boom")
	got, err := readMessage(io.MultiReader(strings.NewReader("part"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) || string(got) != "part" {
		t.Fatalf("failing reader: %q %v; want what came and the error", got, err)
	}
}
