// Package sseread reads the events of a Server-Sent Events stream, as the
// fallback transport writes them, for the project's Go clients: the test
// client (internal/ssetest) and the load generator (cmd/chatbench).
//
// Next allocates nothing for an event without an event field (a frame)
// once the caller's buffer is large enough, so a load generator can read
// many streams with it.
package sseread

import (
	"bufio"
	"bytes"
)

// Next reads the next event from br and returns its name ("message" for
// an event without an event field) and its data lines joined by "\n",
// appended to buf[:0] (pass the data of the previous call to reuse it).
// Comment lines (keepalives) are skipped, calling onComment for each if it
// is not nil; an event without data is dropped. The error is br's, such as
// io.EOF, if the stream ends before the event does.
func Next(br *bufio.Reader, buf []byte, onComment func()) (name string, data []byte, err error) {
	data = buf[:0]
	have := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than br's buffer: gather it.
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			return "", nil, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		switch {
		case len(line) == 0:
			if have {
				if name == "" {
					name = "message"
				}
				return name, data, nil
			}
			name = ""
		case line[0] == ':':
			if onComment != nil {
				onComment()
			}
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "event":
				name = string(value)
			case "data":
				if have {
					data = append(data, '\n')
				}
				data = append(data, value...)
				have = true
			}
		}
	}
}
