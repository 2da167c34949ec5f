package sseread_test

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/internal/sseread"
)

type event struct{ name, data string }

func TestNext(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name     string
		stream   string
		want     []event
		comments int
		err      error // after the events
	}{
		{"a frame", "data: {\"a\":1}\n\n", []event{{"message", `{"a":1}`}}, 0, io.EOF},
		{"named", "event: open\ndata: {}\n\nevent: close\ndata: {\"code\":1000}\n\n",
			[]event{{"open", "{}"}, {"close", `{"code":1000}`}}, 0, io.EOF},
		{"data lines", "data: a\ndata:b\ndata: \n\n", []event{{"message", "a\nb\n"}}, 0, io.EOF},
		{"CRLF", "event: x\r\ndata: y\r\n\r\n", []event{{"x", "y"}}, 0, io.EOF},
		{"comments", ": keepalive\n\n:\ndata: z\n\n: again\n", []event{{"message", "z"}}, 3, io.EOF},
		{"no data", "event: lost\n\ndata: kept\n\n", []event{{"message", "kept"}}, 0, io.EOF},
		{"unknown fields", "id: 7\nretry: 10\ndata: d\n\n", []event{{"message", "d"}}, 0, io.EOF},
		{"longer than the buffer", "data: " + long + "\n\n", []event{{"message", long}}, 0, io.EOF},
		{"cut short", "data: half", nil, 0, io.EOF},
		{"no blank line", "data: half\n", nil, 0, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.stream), 16)
			comments := 0
			var buf []byte
			for i := 0; ; i++ {
				name, data, err := sseread.Next(br, buf, func() { comments++ })
				if err != nil {
					if i != len(tt.want) || !errors.Is(err, tt.err) {
						t.Fatalf("event %d: error %v; want %d events, then %v", i, err, len(tt.want), tt.err)
					}
					break
				}
				if i >= len(tt.want) || (event{name, string(data)}) != tt.want[i] {
					t.Fatalf("event %d: %q %q; want the events %q", i, name, data, tt.want)
				}
				buf = data
			}
			if comments != tt.comments {
				t.Fatalf("%d comments, want %d", comments, tt.comments)
			}
		})
	}
}

// A frame is read with no allocation once the buffer has grown.
func TestNextAllocs(t *testing.T) {
	const frame = "data: {\"type\":\"message\",\"text\":\"hello\"}\n\n"
	r := strings.NewReader("")
	br := bufio.NewReaderSize(r, 4096)
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(frame)
		br.Reset(r)
		name, data, err := sseread.Next(br, buf, nil)
		if err != nil || name != "message" || string(data) != `{"type":"message","text":"hello"}` {
			t.Fatalf("%q %q, %v", name, data, err)
		}
		buf = data
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame, want 0", allocs)
	}
}
