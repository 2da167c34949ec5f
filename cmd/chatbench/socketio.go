package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// The Socket.IO anchor: one Socket.IO 4.8 node (Node.js) on its Redis
// adapter, the stretch target of the performance issue. Its source is
// anchors/socketio (server.js, package.json and package-lock.json);
// chatbench installs its modules with npm ci into a cache folder keyed by
// the lock file's hash, reused by later runs, and starts node server.js
// on a redis-server of its own. It runs in the fan-out scenario only,
// with -socketio or -target socketio.
//
// chatbench speaks Engine.IO 4 over a websocket to it: the open packet
// "0{...}", "40" to connect to the main namespace, answered by "40{...}";
// a benchmark message goes out as the event "m" whose data holds the
// same text as every target's, 42["m",{"text":"cb <sender> <seq> <ns>"}],
// and every member of the room, the sender too, receives it back the same
// way. The server's ping "2" is answered with "3".

const (
	// targetSocketIO is one Socket.IO node on its Redis adapter.
	targetSocketIO = "socketio"
	// socketioDir is the anchor's source, relative to ChatterPro's module
	// root.
	socketioDir = "cmd/chatbench/anchors/socketio"
	// socketioPath is the anchor's Engine.IO endpoint, websocket only.
	socketioPath = "/socket.io/?EIO=4&transport=websocket"
)

// Errors of a machine without Node.js or npm.
var (
	errSocketIONode = errors.New("chatbench: the socketio anchor needs Node.js 18 or later: install it (the nodejs package) so that node is on PATH")
	errSocketIONPM  = errors.New("chatbench: installing the socketio anchor's modules needs npm on PATH: install it (the npm package), " +
		"or give -socketio-dir with a copy of " + socketioDir + " after npm ci")
)

// socketioInstall returns the anchor's server.js and the folder whose
// node_modules it runs with: with -socketio-dir, both from that folder;
// else the source's server.js and an install in the user's cache folder,
// keyed by the hash of package-lock.json and made with npm ci when
// missing.
func socketioInstall(cfg *config) (script, mods string, err error) {
	if d := cfg.socketioDir; d != "" {
		for _, f := range []string{"server.js", filepath.Join("node_modules", "socket.io")} {
			if _, err := os.Stat(filepath.Join(d, f)); err != nil {
				return "", "", fmt.Errorf("-socketio-dir %s must hold the anchor with its modules (a copy of %s after npm ci): %w", d, socketioDir, err)
			}
		}
		return filepath.Join(d, "server.js"), d, nil
	}
	src, err := anchorPath(socketioDir, "package-lock.json")
	if err != nil {
		return "", "", err
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		return "", "", fmt.Errorf("socketio anchor: %w", err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", "", fmt.Errorf("socketio anchor: no cache folder for its modules (set HOME or XDG_CACHE_HOME, or give -socketio-dir): %w", err)
	}
	sum := sha256.Sum256(lock)
	mods = filepath.Join(cache, "chatterpro-chatbench", "socketio-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(mods, "node_modules", "socket.io")); err != nil {
		if err := npmCI(src, mods); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(src, "server.js"), mods, nil
}

// npmCI installs the modules of the package in src into dir: npm ci runs
// in a fresh folder beside dir, renamed to dir once complete, so that an
// interrupted install is never reused and concurrent runs do not collide.
func npmCI(src, dir string) error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errSocketIONPM
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("socketio anchor: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("socketio anchor: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after the rename
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return fmt.Errorf("socketio anchor: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
			return fmt.Errorf("socketio anchor: %w", err)
		}
	}
	logf("installing the socketio anchor's modules (npm ci) into %s", dir)
	cmd := exec.Command(npm, "ci", "--omit=dev", "--no-audit", "--no-fund")
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installing the socketio anchor's modules with npm ci (check npm can reach its registry, or give -socketio-dir): %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "node_modules", "socket.io")); serr == nil {
			return nil // another run installed it meanwhile
		}
		return fmt.Errorf("socketio anchor: %w", err)
	}
	return nil
}

// startSocketIO starts one anchor node on a redis-server of its own. Its
// base is its Engine.IO websocket URL, which tells join to speak
// Socket.IO (see isSocketIO).
func startSocketIO(ctx context.Context, cfg *config, dir string) (*target, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errSocketIONode
	}
	script, mods, err := socketioInstall(cfg)
	if err != nil {
		return nil, err
	}
	rp, raddr, err := startRedisProc(cfg, dir)
	if err != nil {
		return nil, err
	}
	t := &target{name: targetSocketIO, layer: "redis", aux: []*proc{rp}}
	// NODE_PATH lets server.js, run from its source folder, find the
	// modules installed in the cache.
	p, addr, err := startAnchorNode(ctx, dir, "socketio", node, []string{"NODE_PATH=" + filepath.Join(mods, "node_modules")},
		func(addr string) []string { return []string{script, "-addr", addr, "-redis", raddr} })
	if err != nil {
		t.stop()
		return nil, err
	}
	t.nodes = append(t.nodes, p)
	t.bases = append(t.bases, "ws://"+addr+socketioPath)
	time.Sleep(startupSleep)
	return t, nil
}

// isSocketIO reports whether base is a Socket.IO anchor's endpoint.
func isSocketIO(base string) bool { return strings.Contains(base, "/socket.io/") }

// Engine.IO and Socket.IO packets, as websocket text messages.
var (
	sioOpen       = []byte("0")  // Engine.IO open, with the session's JSON
	sioConnect    = []byte("40") // Socket.IO connect to "/", and its reply
	sioPing       = []byte("2")
	sioPong       = []byte("3")
	sioEvent      = []byte(`42["m",`)
	sioDisconnect = []byte("41") // the server disconnected the socket
	sioConnectErr = []byte("44") // the namespace refused the connect
	sioClose      = []byte("1")  // Engine.IO close
)

// joinSocketIO opens a websocket to a Socket.IO anchor in room: it reads
// the open packet, connects to the main namespace and returns once the
// connect is acknowledged (the server has joined the socket to the room
// by then).
func (nc *netClient) joinSocketIO(ctx context.Context, base string, id int, room string) (*client, error) {
	ws, _, err := websocket.Dial(ctx, base+"&room="+url.QueryEscape(room), &websocket.DialOptions{
		HTTPClient:      nc.hc,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	ws.SetReadLimit(4 << 20)
	c := &client{id: id, room: room, ws: ws, tr: newTracker(), done: make(chan struct{}), socketio: true}
	if err := c.socketioHandshake(ctx); err != nil {
		ws.CloseNow()
		return nil, err
	}
	go c.readLoop()
	return c, nil
}

// socketioHandshake reads the open packet, sends the namespace connect
// and waits for its acknowledgement; other packets before it are handled
// as usual.
func (c *client) socketioHandshake(ctx context.Context) error {
	_, f, err := c.ws.Read(ctx)
	if err != nil {
		return fmt.Errorf("socket.io open: %w", err)
	}
	if !bytes.HasPrefix(f, sioOpen) {
		return fmt.Errorf("socket.io: first packet is not open: %.80s", f)
	}
	if err := c.ws.Write(ctx, websocket.MessageText, sioConnect); err != nil {
		return fmt.Errorf("socket.io connect: %w", err)
	}
	for {
		_, f, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("socket.io connect reply: %w", err)
		}
		switch {
		case bytes.HasPrefix(f, sioConnect):
			return nil
		case bytes.HasPrefix(f, sioConnectErr), bytes.HasPrefix(f, sioDisconnect):
			return fmt.Errorf("socket.io connect refused: %.200s", f)
		}
		c.handleSocketIO(f, time.Now())
	}
}

// socketioFrame is the event carrying one benchmark message, with the
// same text as messageFrame's.
func socketioFrame(buf []byte, sender, seq uint32, sched time.Time) []byte {
	buf = append(buf[:0], `42["m",{"text":"cb `...)
	buf = appendText(buf, sender, seq, sched)
	return append(buf, `"}]`...)
}

// handleSocketIO measures one Engine.IO packet received at now: events
// "m" are recorded, pings answered, disconnects and connect errors
// counted as errors; anything else is ignored.
func (c *client) handleSocketIO(f []byte, now time.Time) {
	switch {
	case bytes.HasPrefix(f, sioEvent):
		c.record(f, now)
	case bytes.Equal(f, sioPing):
		// Unanswered, the server closes the connection after its
		// pingTimeout.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.ws.Write(ctx, websocket.MessageText, sioPong)
		cancel()
	case bytes.HasPrefix(f, sioDisconnect), bytes.HasPrefix(f, sioConnectErr), bytes.Equal(f, sioClose):
		c.recordError(f)
	}
}

// socketioTargets lists the Socket.IO target of a scenario: fan-out only,
// with -socketio or -target socketio.
func socketioTargets(cfg *config, scenario string) []string {
	if scenario == "fanout" && (cfg.socketio || cfg.target == targetSocketIO) {
		return []string{targetSocketIO}
	}
	return nil
}
