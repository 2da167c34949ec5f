package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chatterpro/chatterpro/internal/harness"
	"github.com/coder/websocket"
)

// The centrifuge anchor: a server built on the centrifuge library, in a Go
// module of its own under anchors/centrifuge (so that ChatterPro's go.mod
// does not grow), on its Redis broker without history. chatbench builds it
// with the go command when a scenario needs it and speaks centrifuge's
// JSON protocol to it: connect, subscribe to the room's channel, publish.
// The measured path is ChatterPro's: a client sends, the server publishes
// to the room, every member (the sender too) receives it.

// Target names of the anchor.
const (
	// One centrifuge node on its Redis broker.
	targetCentrifuge = "centrifuge"
	// Two centrifuge nodes on one Redis, the room's members split over them.
	targetCentrifuge2 = "centrifuge-2nodes"
	// anchorDir is the anchor's module, relative to ChatterPro's module root.
	anchorDir = "cmd/chatbench/anchors/centrifuge"
	// centrifugePath is the anchor's websocket endpoint.
	centrifugePath = "/connection/websocket"
)

var errAnchorSource = errors.New("chatbench: anchor source not found")

// centrifugeBinary returns the anchor binary to run, building it into dir
// when -centrifuge-bin was not given.
func centrifugeBinary(cfg *config, dir string) (string, error) {
	if cfg.centrifugeBin != "" {
		return cfg.centrifugeBin, nil
	}
	src, err := anchorSource()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "centrifuge-anchor")
	if err := buildAnchor(src, out); err != nil {
		return "", err
	}
	cfg.centrifugeBin = out
	return out, nil
}

// anchorSource finds the anchor's module from ChatterPro's go.mod (found
// by the go command from the working directory).
func anchorSource() (string, error) { return anchorPath(anchorDir, "go.mod") }

// anchorPath finds the folder rel of ChatterPro's module (located by the
// go command from the working directory) and checks it holds file.
func anchorPath(rel, file string) (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("%w: go env GOMOD: %v", errAnchorSource, err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("%w: run chatbench inside ChatterPro's module, or give the anchor's own flag (-centrifuge-bin, -socketio-dir)", errAnchorSource)
	}
	src := filepath.Join(filepath.Dir(gomod), filepath.FromSlash(rel))
	if _, err := os.Stat(filepath.Join(src, file)); err != nil {
		return "", fmt.Errorf("%w: %v", errAnchorSource, err)
	}
	return src, nil
}

// buildAnchor builds the anchor module in src into out (the go command
// fetches its modules when they are missing).
func buildAnchor(src, out string) error {
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = src
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	logf("building the centrifuge anchor in %s", anchorDir)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the centrifuge anchor (give a binary with -centrifuge-bin): %w", err)
	}
	return nil
}

// startRedisProc starts a redis-server of a target on a free port.
func startRedisProc(cfg *config, dir string) (*proc, string, error) {
	return startRedis(cfg, dir, "redis-server")
}

// startCentrifuge starts nodes anchor servers on one Redis of their own.
// Their bases are websocket URLs (ws://...), which tells join to speak
// centrifuge's protocol.
func startCentrifuge(ctx context.Context, cfg *config, dir string, nodes int, name string) (*target, error) {
	bin, err := centrifugeBinary(cfg, dir)
	if err != nil {
		return nil, err
	}
	rp, raddr, err := startRedisProc(cfg, dir)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, layer: "redis", aux: []*proc{rp}}
	for i := range nodes {
		p, addr, err := startAnchorNode(ctx, dir, fmt.Sprintf("centrifuge%d", i+1), bin, nil, func(addr string) []string {
			return []string{"-addr", addr, "-redis", raddr}
		})
		if err != nil {
			t.stop()
			return nil, err
		}
		t.nodes = append(t.nodes, p)
		t.bases = append(t.bases, "ws://"+addr+centrifugePath)
	}
	time.Sleep(startupSleep)
	return t, nil
}

// startAnchorNode starts one anchor server on a free loopback port, its
// command line args(addr), and waits until its /healthz answers.
func startAnchorNode(ctx context.Context, dir, name, bin string, env []string, args func(addr string) []string) (*proc, string, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := startProc(dir, name, bin, env, args(addr)...)
	if err != nil {
		return nil, "", err
	}
	if err := waitHTTP(ctx, p, "http://"+addr+"/healthz"); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

// isCentrifuge reports whether base is a centrifuge websocket endpoint
// (join asks isSocketIO first: the Socket.IO anchor's is one too).
func isCentrifuge(base string) bool { return strings.HasPrefix(base, "ws://") }

// joinCentrifuge opens a websocket to a centrifuge endpoint, connects
// anonymously and subscribes to the room's channel; it returns once the
// subscription is confirmed.
func (nc *netClient) joinCentrifuge(ctx context.Context, wsURL string, id int, room string) (*client, error) {
	ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{
		HTTPClient:      nc.hc,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	ws.SetReadLimit(4 << 20)
	ch, _ := json.Marshal(room)
	c := &client{id: id, room: room, ws: ws, tr: newTracker(), done: make(chan struct{}), centrifuge: true,
		pubPrefix: []byte(`,"publish":{"channel":` + string(ch) + `,"data":{"text":"cb `)}
	for _, cmd := range []string{`"connect":{}`, `"subscribe":{"channel":` + string(ch) + `}`} {
		if err := c.centrifugeCommand(ctx, cmd); err != nil {
			ws.CloseNow()
			return nil, err
		}
	}
	go c.readLoop()
	return c, nil
}

// centrifugeCommand sends one command and waits for its reply; frames
// that arrive before it are handled as usual.
func (c *client) centrifugeCommand(ctx context.Context, body string) error {
	id := c.cmdID.Add(1)
	idField := []byte(`{"id":` + strconv.FormatUint(uint64(id), 10) + `,`)
	if err := c.ws.Write(ctx, websocket.MessageText, append(idField, body+"}"...)); err != nil {
		return fmt.Errorf("centrifuge command: %w", err)
	}
	for {
		_, f, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("centrifuge reply: %w", err)
		}
		var rest [][]byte
		var reply []byte
		for line := range bytes.SplitSeq(f, []byte("\n")) {
			if reply == nil && bytes.HasPrefix(line, idField) {
				reply = line
			} else {
				rest = append(rest, line)
			}
		}
		for _, line := range rest {
			c.handleCentrifugeLine(line, time.Now())
		}
		if reply != nil {
			if bytes.HasPrefix(reply[len(idField):], []byte(`"error"`)) {
				return fmt.Errorf("centrifuge reply: %s", reply)
			}
			return nil
		}
	}
}

// centrifugeFrame is the publish command carrying one benchmark message,
// with the same text as messageFrame's.
func (c *client) centrifugeFrame(buf []byte, sender, seq uint32, sched time.Time) []byte {
	buf = append(buf[:0], `{"id":`...)
	buf = strconv.AppendUint(buf, uint64(c.cmdID.Add(1)), 10)
	buf = append(buf, c.pubPrefix...)
	buf = appendText(buf, sender, seq, sched)
	return append(buf, `"}}}`...)
}

var (
	centrifugePing  = []byte(`{}`)
	centrifugePush  = []byte(`{"push":`)
	centrifugePub   = []byte(`"pub":`)
	centrifugeError = []byte(`"error":`)
	centrifugeBye   = []byte(`"disconnect":`)
)

// handleCentrifuge measures one websocket frame of centrifuge's JSON
// protocol received at now: one reply or push per line.
func (c *client) handleCentrifuge(f []byte, now time.Time) {
	for line := range bytes.SplitSeq(f, []byte("\n")) {
		c.handleCentrifugeLine(line, now)
	}
}

func (c *client) handleCentrifugeLine(line []byte, now time.Time) {
	switch {
	case bytes.Equal(line, centrifugePing):
		// The server's ping: answered, or it disconnects the client.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.ws.Write(ctx, websocket.MessageText, centrifugePing)
		cancel()
	case bytes.HasPrefix(line, centrifugePush):
		head := line[:min(len(line), 120)]
		if bytes.Contains(head, centrifugePub) {
			c.record(line, now)
		} else if bytes.Contains(head, centrifugeBye) {
			c.recordError(line)
		}
	case bytes.Contains(line[:min(len(line), 40)], centrifugeError):
		c.recordError(line)
	}
}

// recordError counts an error reply or frame.
func (c *client) recordError(f []byte) {
	c.mu.Lock()
	c.errors++
	if c.first == "" {
		c.first = string(f)
	}
	c.mu.Unlock()
}

// anchorTargets lists the centrifuge targets of a scenario: one node on
// Redis for fanout and rooms, one and two nodes on Redis for crossnode.
// Many rooms then also runs ChatterPro on Redis, to compare on one layer.
func anchorTargets(cfg *config, scenario string) []string {
	if cfg.target != "centrifuge" && (cfg.target != "both" || !cfg.centrifuge) {
		return nil
	}
	switch scenario {
	case "fanout":
		return []string{targetCentrifuge}
	case "crossnode":
		return []string{targetCentrifuge, targetCentrifuge2}
	case "rooms":
		if cfg.target == "both" {
			return []string{targetOursRedis, targetCentrifuge}
		}
		return []string{targetCentrifuge}
	}
	return nil
}
