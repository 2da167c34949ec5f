package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
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
	c := &sock{Conn: server, timeout: 5 * time.Second}
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
	c := &sock{Conn: server, timeout: 5 * time.Second}
	defer c.Close()
	ping := libFrameBytes(0x9, []byte("half and half"))
	started := make(chan struct{})
	done := make(chan error, 2)
	go func() {
		_, err := c.Write(ping[:5])
		close(started)
		if err == nil {
			time.Sleep(50 * time.Millisecond) // the batch comes meanwhile
			_, err = c.Write(ping[5:])
		}
		done <- err
	}()
	go func() {
		<-started
		done <- c.writeFrames([][]byte{[]byte("text")})
	}()
	r := bufio.NewReader(client)
	for i, want := range []byte{0x9, 0x1} {
		op, _, err := readFrame(r)
		if err != nil || op != want {
			t.Fatalf("frame %d: opcode %d, %v; want %d", i, op, err, want)
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
	c := &sock{Conn: server, timeout: 5 * time.Second}
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
