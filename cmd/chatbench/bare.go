package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// The bare hub is the baseline: the least a Go websocket chat can do while
// speaking ChatterPro's frames. A map of rooms, one reader and one writer
// goroutine per connection, no layer, no history, no presence.

type bareHub struct {
	mu    sync.RWMutex
	rooms map[string]map[*bareClient]struct{}
	ids   atomic.Uint64
}

type bareClient struct {
	ws   *websocket.Conn
	out  chan []byte
	once sync.Once
	gone chan struct{}
}

func (c *bareClient) kill() { c.once.Do(func() { close(c.gone) }) }

const bareCookie = "chatterpro_session"

// serveBare runs the bare hub on addr until SIGTERM or SIGINT.
func serveBare(addr string) error {
	h := &bareHub{rooms: make(map[string]map[*bareClient]struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("POST /join", func(w http.ResponseWriter, r *http.Request) {
		nick, room := r.FormValue("nickname"), r.FormValue("room")
		if nick == "" || room == "" {
			http.Error(w, "nickname and room needed", http.StatusBadRequest)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: bareCookie, Value: url.QueryEscape(nick), Path: "/", HttpOnly: true})
		http.Redirect(w, r, "/chat/"+url.PathEscape(room), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ws/chat/{room}/", h.serveWS)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; _ = srv.Close() }()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (h *bareHub) serveWS(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(bareCookie)
	if err != nil {
		http.Error(w, "log in first", http.StatusForbidden)
		return
	}
	user, _ := url.QueryUnescape(ck.Value)
	room := r.PathValue("room")
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c := &bareClient{ws: ws, out: make(chan []byte, 256), gone: make(chan struct{})}
	c.out <- []byte(`{"type":"history","messages":[]}`)
	h.mu.Lock()
	members := h.rooms[room]
	if members == nil {
		members = make(map[*bareClient]struct{})
		h.rooms[room] = members
	}
	members[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(members, c)
		if len(members) == 0 {
			delete(h.rooms, room)
		}
		h.mu.Unlock()
		c.kill()
		ws.CloseNow()
	}()
	go c.writeLoop()

	ctx := r.Context()
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var f struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if json.Unmarshal(data, &f) != nil || f.Type != "message" || f.Text == "" {
			c.push([]byte(`{"type":"error","code":"bad_json","text":"bad frame"}`))
			continue
		}
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			User string `json:"user"`
			Text string `json:"text"`
			Time string `json:"time"`
		}{"message", strconv.FormatUint(h.ids.Add(1), 10), user, f.Text, time.Now().UTC().Format(time.RFC3339)})
		h.mu.RLock()
		for m := range members {
			m.push(b)
		}
		h.mu.RUnlock()
	}
}

// push queues a frame; a client whose queue is full is dropped (slow).
func (c *bareClient) push(b []byte) {
	select {
	case c.out <- b:
	default:
		c.kill()
	}
}

func (c *bareClient) writeLoop() {
	for {
		select {
		case b := <-c.out:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := c.ws.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.kill()
				c.ws.CloseNow()
				return
			}
		case <-c.gone:
			c.ws.Close(websocket.StatusTryAgainLater, "slow consumer")
			return
		}
	}
}
