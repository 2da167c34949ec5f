package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// netClient joins and dials with connections spread over several loopback
// source addresses (127.0.0.2, 127.0.0.3, ...), so that more connections
// than one address's ephemeral ports can be open at once.
type netClient struct {
	hc   *http.Client
	next atomic.Uint32
	ips  int
	sse  bool // members use the fallback transport (see sse.go)
	acks bool // members measure their own copies apart (see withAcks)
}

func newNetClient(sourceIPs int) *netClient {
	nc := &netClient{ips: max(1, sourceIPs)}
	tr := &http.Transport{
		DialContext:         nc.dial,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	nc.hc = &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nc
}

func (nc *netClient) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	i := nc.next.Add(1)
	ip := net.IPv4(127, 0, 0, byte(2+int(i)%nc.ips))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, network, addr)
}

func (nc *netClient) close() { nc.hc.CloseIdleConnections() }

// withSSE returns a client of the same connections whose members use the
// fallback transport instead of websockets.
func (nc *netClient) withSSE() *netClient {
	return &netClient{hc: nc.hc, ips: nc.ips, sse: true, acks: nc.acks}
}

// withAcks returns a client of the same connections whose members keep
// the latency of their own messages' copies (the sender's acknowledgement)
// apart from that of the other members' messages: a member sends as
// sender id its client id (see takeAcks).
func (nc *netClient) withAcks() *netClient {
	return &netClient{hc: nc.hc, ips: nc.ips, sse: nc.sse, acks: true}
}

// client is one chat member: a websocket in one room, or (sse set) an
// event stream and its POSTs.
type client struct {
	id   int
	room string
	ws   *websocket.Conn
	sse  *sseConn

	mu     sync.Mutex // guards the measurement below
	tr     *tracker
	lat    histogram
	errors int
	first  string // first error frame
	// ack holds the latency of the client's own messages coming back,
	// when acks is set (they are then not in lat).
	acks bool
	ack  histogram

	// measureFrom (Unix ns): messages scheduled earlier are counted for
	// loss and duplicates but not in the latency histogram (warm-up).
	measureFrom atomic.Int64

	closed  atomic.Bool
	readErr error
	done    chan struct{}

	// centrifuge is set on a client of the centrifuge anchor, which speaks
	// centrifuge's protocol: commands numbered by cmdID, messages
	// published with pubPrefix (see centrifuge.go).
	centrifuge bool
	cmdID      atomic.Uint32
	pubPrefix  []byte
	// socketio is set on a client of the Socket.IO anchor, which speaks
	// Engine.IO and Socket.IO packets (see socketio.go).
	socketio bool
}

// join logs in over HTTP and opens the room's websocket; it returns once
// the first frame (history) has arrived. A base that is a websocket URL is
// an anchor's endpoint: Socket.IO's (see joinSocketIO) or else
// centrifuge's (see joinCentrifuge).
func (nc *netClient) join(ctx context.Context, base string, id int, room string) (*client, error) {
	if isSocketIO(base) {
		return nc.joinSocketIO(ctx, base, id, room)
	}
	if isCentrifuge(base) {
		return nc.joinCentrifuge(ctx, base, id, room)
	}
	form := url.Values{"nickname": {"m" + strconv.Itoa(id)}, "room": {room}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/join", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := nc.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("join: status %d", resp.StatusCode)
	}
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == "chatterpro_session" {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		return nil, errors.New("join: no session cookie")
	}
	if nc.sse {
		s, first, err := nc.openSSE(ctx, base, room, cookie)
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(first, []byte(`{"type":"history"`)) {
			s.close()
			return nil, fmt.Errorf("first frame is not history: %.80s", first)
		}
		c := &client{id: id, room: room, sse: s, tr: newTracker(), acks: nc.acks, done: make(chan struct{})}
		go c.sseReadLoop()
		return c, nil
	}
	wsURL := roomWS(base, room)
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{
		HTTPClient:      nc.hc,
		HTTPHeader:      http.Header{"Cookie": {cookie}},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	ws.SetReadLimit(4 << 20)
	_, first, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("first frame: %w", err)
	}
	if !bytes.HasPrefix(first, []byte(`{"type":"history"`)) {
		ws.CloseNow()
		return nil, fmt.Errorf("first frame is not history: %.80s", first)
	}
	c := &client{id: id, room: room, ws: ws, tr: newTracker(), acks: nc.acks, done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

var (
	textMarker = []byte(`"text":"cb `)
	typeMsg    = []byte(`"type":"message"`)
	typeErr    = []byte(`"type":"error"`)
)

func (c *client) readLoop() {
	defer close(c.done)
	defer c.closed.Store(true)
	var buf []byte
	for {
		_, r, err := c.ws.Reader(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				c.readErr = err
				return
			}
		}
		switch {
		case c.centrifuge:
			c.handleCentrifuge(buf, time.Now())
		case c.socketio:
			c.handleSocketIO(buf, time.Now())
		default:
			c.handle(buf, time.Now())
		}
	}
}

// handle measures one frame received at now.
func (c *client) handle(f []byte, now time.Time) {
	head := f[:min(len(f), 80)] // "type" may follow a history "id"
	if bytes.Contains(head, typeErr) {
		c.recordError(f)
		return
	}
	if !bytes.Contains(head, typeMsg) {
		return
	}
	c.record(f, now)
}

// record measures one frame carrying a benchmark message, received at now.
func (c *client) record(f []byte, now time.Time) {
	sender, seq, sched, ok := parseText(f)
	if !ok {
		return
	}
	c.mu.Lock()
	if !c.tr.record(sender, seq) && sched >= c.measureFrom.Load() {
		if c.acks && sender == uint32(c.id) {
			c.ack.record(now.Sub(time.Unix(0, sched)))
		} else {
			c.lat.record(now.Sub(time.Unix(0, sched)))
		}
	}
	c.mu.Unlock()
}

// parseText finds "cb <sender> <seq> <scheduled unix ns>" in a message frame.
func parseText(f []byte) (sender, seq uint32, sched int64, ok bool) {
	i := bytes.Index(f, textMarker)
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := f[i+len(textMarker):]
	var nums [3]int64
	for k := range nums {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			nums[k] = nums[k]*10 + int64(rest[j]-'0')
			j++
		}
		if j == 0 || j >= len(rest) {
			return 0, 0, 0, false
		}
		rest = rest[j+1:]
	}
	return uint32(nums[0]), uint32(nums[1]), nums[2], true
}

// messageFrame is the client frame carrying one benchmark message.
func messageFrame(buf []byte, sender, seq uint32, sched time.Time) []byte {
	buf = append(buf[:0], `{"type":"message","text":"cb `...)
	buf = appendText(buf, sender, seq, sched)
	return append(buf, `"}`...)
}

// appendText appends the rest of a benchmark message's text after its
// "cb ": "<sender> <seq> <scheduled unix ns>", which parseText reads back
// from every target's frames.
func appendText(buf []byte, sender, seq uint32, sched time.Time) []byte {
	buf = strconv.AppendUint(buf, uint64(sender), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, uint64(seq), 10)
	buf = append(buf, ' ')
	return strconv.AppendInt(buf, sched.UnixNano(), 10)
}

// frame is the client's frame carrying one benchmark message, in its
// server's protocol.
func (c *client) frame(buf []byte, sender, seq uint32, sched time.Time) []byte {
	if c.centrifuge {
		return c.centrifugeFrame(buf, sender, seq, sched)
	}
	if c.socketio {
		return socketioFrame(buf, sender, seq, sched)
	}
	return messageFrame(buf, sender, seq, sched)
}

// take returns the measurement so far and starts a new one.
func (c *client) take() (*tracker, *histogram, int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tr, h := c.tr, c.lat
	c.tr, c.lat = newTracker(), histogram{}
	errs, first := c.errors, c.first
	c.errors, c.first = 0, ""
	return tr, &h, errs, first
}

// takeAcks returns the latencies of the client's own messages coming back
// so far (with acks set) and starts a new histogram of them.
func (c *client) takeAcks() *histogram {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.ack
	c.ack = histogram{}
	return &h
}

// uniqueNow returns distinct messages received so far from sent.
func (c *client) uniqueNow(sent map[uint32]uint32) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.unique(sent)
}

// write sends one frame: a websocket message, or a POST of the fallback
// transport.
func (c *client) write(ctx context.Context, frame []byte) error {
	if c.sse != nil {
		return c.sse.post(ctx, frame)
	}
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

func (c *client) close() {
	if c.sse != nil {
		c.sse.close()
	} else {
		c.ws.Close(websocket.StatusNormalClosure, "")
	}
	<-c.done
}

// connectAll joins n clients with the given concurrency; room and base
// pick each client's room and node. On error it closes what it opened.
func connectAll(ctx context.Context, nc *netClient, n, conc int, base func(i int) string, room func(i int) string, progress func(done int, took time.Duration)) ([]*client, error) {
	clients := make([]*client, n)
	var (
		next  atomic.Int64
		done  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := nc.join(jctx, base(i), i, room(i))
				jcancel()
				if err != nil {
					errMu.Lock()
					if first == nil {
						first = fmt.Errorf("client %d: %w", i, err)
					}
					errMu.Unlock()
					cancel()
					return
				}
				clients[i] = c
				if d := done.Add(1); progress != nil {
					progress(int(d), time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		closeAll(clients)
		return nil, first
	}
	return clients, nil
}

func closeAll(clients []*client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); c.close(); <-sem }()
	}
	wg.Wait()
}

// roomWS is the websocket URL of room on the node at base (http://...).
func roomWS(base, room string) string {
	return "ws" + strings.TrimPrefix(base, "http") + "/ws/chat/" + url.PathEscape(room) + "/"
}
