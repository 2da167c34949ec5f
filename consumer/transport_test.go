package consumer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// readFrame reads one unmasked frame.
func readFrame(r io.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad header % x", h)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return h[0] & 0x0f, payload, err
}

// libFrameBytes is a frame as the library would write it.
func libFrameBytes(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// The library's frames, even written a few bytes at a time, and the
// framework's batches reach the peer whole, never cut into each other.
func TestCorkConnFramesDoNotInterleave(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := &corkConn{Conn: server, timeout: 5 * time.Second}
	defer c.Close()

	const batches, pings = 200, 200
	text := func(i, j int) []byte {
		return bytes.Repeat([]byte{byte('a' + (i+j)%26)}, []int{3, 200, 70000}[(i+j)%3])
	}
	var wg sync.WaitGroup
	wg.Add(2)
	errs := make(chan error, 2)
	go func() {
		defer wg.Done()
		for i := 0; i < batches; i++ {
			if err := c.writeFrames([][]byte{text(i, 0), text(i, 1)}); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		// A tiny buffer: every library frame goes out in several writes.
		w := bufio.NewWriterSize(c, 16)
		for i := 0; i < pings; i++ {
			payload := []byte(fmt.Sprintf("ping %d with some more bytes", i))
			if _, err := w.Write(libFrameBytes(0x9, payload)); err != nil {
				errs <- err
				return
			}
			if err := w.Flush(); err != nil {
				errs <- err
				return
			}
		}
	}()

	r := bufio.NewReader(client)
	nextText, nextPing := 0, 0
	for nextText < 2*batches || nextPing < pings {
		op, payload, err := readFrame(r)
		if err != nil {
			t.Fatalf("after %d text frames and %d pings: %v", nextText, nextPing, err)
		}
		switch op {
		case 0x1:
			if want := text(nextText/2, nextText%2); !bytes.Equal(payload, want) {
				t.Fatalf("text frame %d: %d bytes, want %d of %q", nextText, len(payload), len(want), want[0])
			}
			nextText++
		case 0x9:
			if want := fmt.Sprintf("ping %d with some more bytes", nextPing); string(payload) != want {
				t.Fatalf("ping %d: %q, want %q", nextPing, payload, want)
			}
			nextPing++
		default:
			t.Fatalf("unexpected opcode %d", op)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A batch that comes while the library is inside a frame waits for the
// frame's end.
func TestCorkConnBatchWaitsForLibraryFrame(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	c := &corkConn{Conn: server, timeout: 5 * time.Second}
	defer c.Close()
	ping := libFrameBytes(0x9, []byte("half and half"))
	started := make(chan struct{})
	proceed := make(chan struct{})
	done := make(chan error, 2)
	go func() {
		_, err := c.Write(ping[:5])
		close(started)
		if err == nil {
			<-proceed // the batch comes meanwhile
			_, err = c.Write(ping[5:])
		}
		done <- err
	}()
	batcher := make(chan uint64, 1)
	go func() {
		<-started
		batcher <- testkit.GoroutineID()
		done <- c.writeFrames([][]byte{[]byte("text")})
	}()
	type frame struct {
		op  byte
		err error
	}
	frames := make(chan frame, 2)
	go func() {
		r := bufio.NewReader(client)
		for range 2 {
			op, _, err := readFrame(r)
			frames <- frame{op, err}
			if err != nil {
				return
			}
		}
	}()
	testkit.WaitBlocked(t, 5*time.Second, testkit.Receive(t, batcher, 5*time.Second, "the batch starting"), "the batch waiting")
	close(proceed)
	for i, want := range []byte{0x9, 0x1} {
		f := testkit.Receive(t, frames, 5*time.Second, "a frame")
		if f.err != nil || f.op != want {
			t.Fatalf("frame %d: opcode %d, %v; want %d", i, f.op, f.err, want)
		}
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// No text frame follows the library's close frame.
func TestCorkConnNothingAfterClose(t *testing.T) {
	server, client := net.Pipe()
	c := &corkConn{Conn: server, timeout: 5 * time.Second}
	defer c.Close()
	ops := make(chan byte, 4)
	go func() {
		defer close(ops)
		for {
			op, _, err := readFrame(client)
			if err != nil {
				return
			}
			ops <- op
		}
	}()
	if _, err := c.Write(libFrameBytes(0x8, []byte{0x03, 0xe8})); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFrames([][]byte{[]byte("late")}); err == nil {
		t.Error("writeFrames after the close frame: no error")
	}
	client.Close()
	for op := range ops {
		if op != 0x8 {
			t.Errorf("frame with opcode %d after the close frame", op)
		}
	}
}

func TestLibFrameLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		frame := libFrameBytes(0x1, make([]byte, n))
		// Fed whole and one byte at a time, the frame ends the stream
		// on a boundary, and not one byte before.
		var f libFrame
		f.feed(frame)
		if f.mid() {
			t.Fatalf("%d-byte payload fed whole: still mid-frame", n)
		}
		var g libFrame
		for i := range frame {
			g.feed(frame[i : i+1])
			if mid := g.mid(); mid != (i < len(frame)-1) {
				t.Fatalf("%d-byte payload, after byte %d of %d: mid = %v", n, i+1, len(frame), mid)
			}
		}
	}
	var f libFrame
	if !f.feed(libFrameBytes(0x8, nil)) {
		t.Fatal("a close frame was not seen")
	}
	masked := []byte{0x89, 0x80 | 2, 1, 2, 3, 4, 'h', 'i'}
	f.feed(masked[:5])
	if !f.mid() {
		t.Fatal("inside a masked frame's key: not mid-frame")
	}
	f.feed(masked[5:])
	if f.mid() {
		t.Fatal("after a masked frame: still mid-frame")
	}
}

// batchTransport records the batches written to it; Read waits until it is
// closed.
type batchTransport struct {
	mu      sync.Mutex
	frames  []string
	batches int
	closed  chan struct{}
	once    sync.Once
}

func (t *batchTransport) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	<-t.closed
	return 0, nil, websocket.CloseError{Code: StatusNormal}
}

func (t *batchTransport) Write(ctx context.Context, text []byte) error {
	return t.WriteBatch(ctx, [][]byte{text})
}

func (t *batchTransport) WriteBatch(ctx context.Context, texts [][]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.batches++
	for _, p := range texts {
		t.frames = append(t.frames, string(p))
	}
	return nil
}

func (t *batchTransport) Ping(ctx context.Context) error { return nil }
func (t *batchTransport) Close(code StatusCode, reason string) error {
	return t.CloseNow()
}
func (t *batchTransport) CloseNow() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// serveGroupEcho serves, over a batchTransport, a consumer in group "g"
// that sends every "e" event's body to its client; it returns once the
// consumer has joined. served receives Serve's result.
func serveGroupEcho(t *testing.T, lo channellayer.MemoryOptions, coalesce time.Duration) (*channellayer.Memory, *Server, *batchTransport, chan error) {
	t.Helper()
	layer, err := channellayer.NewMemory(lo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { layer.Close(context.Background()) })
	srv, err := NewServer(Options{Layer: layer, Coalesce: coalesce})
	if err != nil {
		t.Fatal(err)
	}
	tr := &batchTransport{closed: make(chan struct{})}
	joined := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(Scope{Path: "/"}, Funcs{OnConnect: func(ctx context.Context, c *Conn) error {
			c.On("e", func(ctx context.Context, c *Conn, m channellayer.Message) error { return c.Send(m.Body) })
			return c.GroupAdd(ctx, "g")
		}}, func() (Transport, error) { close(joined); return tr, nil })
	}()
	<-joined
	return layer, srv, tr, served
}

// A burst of layer events, even spaced out a little, is handled and
// written in a few batches, not one write per event, and nothing is lost
// or reordered.
func TestBurstIsCoalesced(t *testing.T) {
	layer, srv, tr, served := serveGroupEcho(t, channellayer.MemoryOptions{}, 200*time.Millisecond)
	const n = 30
	var want []string
	for i := 0; i < n; i++ {
		m, err := channellayer.NewMessage("e", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(m.Body))
		if err := layer.GroupSend(context.Background(), "g", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // each event alone, unless paced: the pace is what is tested
	}
	var got []string
	var batches int
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		tr.mu.Lock()
		got, batches = slices.Clone(tr.frames), tr.batches
		tr.mu.Unlock()
		if len(got) < n {
			return fmt.Errorf("%d of %d frames arrived", len(got), n)
		}
		return nil
	}, "the burst's frames")
	if !slices.Equal(got, want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	if batches > n/3 {
		t.Fatalf("%d events 2 ms apart went out in %d writes", n, batches)
	}
	tr.CloseNow()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(context.Background())
}

func TestPace(t *testing.T) {
	const ms = int64(time.Millisecond)
	c := &Conn{srv: &Server{opts: Options{Coalesce: 10 * time.Millisecond}}}
	steps := []struct {
		at   int64
		wait time.Duration
	}{
		{1000 * ms, 0},                     // alone
		{1020 * ms, 0},                     // alone: 20 ms after
		{1025 * ms, 0},                     // 5 ms after: one close call is no burst
		{1030 * ms, 5 * time.Millisecond},  // the second in a row: waits for 1025+10
		{1041 * ms, 4 * time.Millisecond},  // in the burst: 1035+10
		{1045 * ms, 10 * time.Millisecond}, // just after the batch due at 1045: at 1055
		{1100 * ms, 0},                     // a pause ends the burst
		{1105 * ms, 0},
	}
	for i, s := range steps {
		if got := c.pace(s.at); got != s.wait {
			t.Fatalf("step %d at %d ms: wait %v, want %v", i, s.at/ms, got, s.wait)
		}
	}
	off := &Conn{srv: &Server{opts: Options{Coalesce: -1}}}
	for i := int64(0); i < 5; i++ {
		if got := off.pace(1000*ms + i); got != 0 {
			t.Fatalf("disabled: wait %v", got)
		}
	}
}

// A paced connection does not wait for its tick while events pile up: past
// paceCap waiting events its dispatcher starts at once, long before the
// layer's channel overflows (which would close it with 1013).
func TestPacedBurstDoesNotOverflow(t *testing.T) {
	layer, srv, tr, served := serveGroupEcho(t, channellayer.MemoryOptions{Capacity: 100}, time.Hour)
	const n = 300
	m, _ := channellayer.NewMessage("e", nil)
	for i := 0; i < n; i++ {
		if err := layer.GroupSend(context.Background(), "g", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond) // a burst spread in time, as events come
	}
	testkit.EventuallyNil(t, 10*time.Second, func() error {
		select {
		case <-tr.closed:
			t.Fatal("the connection was closed: its events overflowed while paced")
		default:
		}
		tr.mu.Lock()
		got := len(tr.frames)
		tr.mu.Unlock()
		if got <= n-paceCap {
			return fmt.Errorf("%d of %d frames written; at most %d may wait for the tick", got, n, paceCap-1)
		}
		return nil
	}, "the paced burst's frames")
	tr.CloseNow()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	_ = srv.Shutdown(context.Background())
}
