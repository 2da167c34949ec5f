package chat

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
)

// hub is the node's view of its rooms: which local connections are in
// which room, and the work done once per node rather than once per
// connection: coalesced users frames, presence refresh, and the sweep that
// announces members whose entries expired (a dead node's, or a lost
// connection's after its grace period).
type hub struct {
	layer    channellayer.Layer
	presence channellayer.Presence
	ttl      time.Duration
	interval time.Duration
	log      *slog.Logger
	metrics  *metrics
	counted  func(room string, online int) // told each room's count flush reads

	mu    sync.Mutex
	rooms map[string]*localRoom

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

type localRoom struct {
	conns map[*consumer.Conn]*member
	dirty bool
}

// member is one local connection's presence entry.
type member struct {
	key  string
	info presenceInfo

	// mu orders the hub's refresh of the entry before the connection's
	// last word on it (Disconnect's untrack or grace entry): a refresh
	// that took the member before it left must not write it back after.
	mu   sync.Mutex
	gone bool
}

// leave marks the member gone, after any refresh of its entry in flight.
// The caller owns its presence entry from then on.
func (m *member) leave() {
	m.mu.Lock()
	m.gone = true
	m.mu.Unlock()
}

func newHub(layer channellayer.Layer, p channellayer.Presence, ttl, interval time.Duration, log *slog.Logger, m *metrics, counted func(string, int)) *hub {
	h := &hub{
		layer: layer, presence: p, ttl: ttl, interval: interval, log: log, metrics: m, counted: counted,
		rooms: make(map[string]*localRoom),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *hub) close() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

func (h *hub) add(room string, c *consumer.Conn, m *member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil {
		r = &localRoom{conns: make(map[*consumer.Conn]*member)}
		h.rooms[room] = r
	}
	r.conns[c] = m
}

func (h *hub) remove(room string, c *consumer.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.rooms[room]; r != nil {
		delete(r.conns, c)
		if len(r.conns) == 0 {
			delete(h.rooms, room)
		}
	}
}

// markDirty asks for a users frame to the room's local members at the next tick.
func (h *hub) markDirty(room string) {
	h.mu.Lock()
	if r := h.rooms[room]; r != nil {
		r.dirty = true
	}
	h.mu.Unlock()
}

func (h *hub) run() {
	defer close(h.done)
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	refreshEvery := h.ttl / 3
	lastRefresh := time.Now()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		h.sweep()
		h.flush()
		if time.Since(lastRefresh) >= refreshEvery {
			lastRefresh = time.Now()
			h.refresh()
		}
	}
}

func (h *hub) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

// flush sends each dirty room's latest users frame to its local members:
// one frame per room per tick, encoded once.
func (h *hub) flush() {
	h.mu.Lock()
	var dirty []string
	for name, r := range h.rooms {
		if r.dirty {
			r.dirty = false
			dirty = append(dirty, name)
		}
	}
	h.mu.Unlock()
	for _, room := range dirty {
		ctx, cancel := h.ctx()
		st, err := h.state(ctx, room)
		cancel()
		if err != nil {
			h.log.Warn("listing a room's users failed; will retry", "room", room, "err", err)
			h.markDirty(room)
			continue
		}
		h.counted(room, len(st.sessions))
		b, _ := json.Marshal(st.frame(room))
		h.mu.Lock()
		var conns []*consumer.Conn
		if r := h.rooms[room]; r != nil {
			for c := range r.conns {
				conns = append(conns, c)
			}
		}
		h.mu.Unlock()
		for _, c := range conns {
			if c.Send(b) == nil {
				h.metrics.out.Inc()
			}
		}
	}
}

func (h *hub) state(ctx context.Context, room string) (roomState, error) {
	start := time.Now()
	members, err := h.presence.List(ctx, room)
	h.metrics.observe("presence_list", start, err)
	if err != nil {
		return roomState{}, err
	}
	return newRoomState(members), nil
}

// sweep removes expired presence entries of the rooms this node serves and
// announces the sessions that are gone. Expire hands each entry to one
// caller cluster-wide, so each departure is announced once.
func (h *hub) sweep() {
	for _, room := range h.roomNames() {
		ctx, cancel := h.ctx()
		expired, err := h.presence.Expire(ctx, room)
		if err != nil || len(expired) == 0 {
			cancel()
			continue
		}
		st, err := h.state(ctx, room)
		if err != nil {
			cancel()
			continue
		}
		announced := make(map[string]bool)
		for _, m := range expired {
			p, ok := decodeInfo(m.Info)
			if _, still := st.sessions[p.Session]; !ok || still || announced[p.Session] {
				continue
			}
			announced[p.Session] = true
			// An entry that expired long ago (nobody swept the room since)
			// is not news: it only refreshes the list.
			if time.Since(time.UnixMilli(p.At)) > h.ttl+time.Minute {
				continue
			}
			h.announce(ctx, room, p.Name+" has left the chat", len(st.sessions))
		}
		if len(announced) == 0 {
			h.send(ctx, room, eventPresence, "")
		}
		cancel()
	}
}

// refresh re-tracks the local members' entries before their TTL runs out.
func (h *hub) refresh() {
	type entry struct {
		room string
		m    *member
	}
	h.mu.Lock()
	var all []entry
	for room, r := range h.rooms {
		for _, m := range r.conns {
			all = append(all, entry{room, m})
		}
	}
	h.mu.Unlock()
	for _, e := range all {
		e.m.mu.Lock()
		if !e.m.gone {
			ctx, cancel := h.ctx()
			if err := h.track(ctx, e.room, e.m.key, e.m.info, h.ttl); err != nil {
				h.log.Warn("refreshing presence failed", "room", e.room, "err", err)
			}
			cancel()
		}
		e.m.mu.Unlock()
	}
}

func (h *hub) track(ctx context.Context, room, key string, info presenceInfo, ttl time.Duration) error {
	info.At = time.Now().UnixMilli()
	b, _ := json.Marshal(info)
	start := time.Now()
	err := h.presence.Track(ctx, room, key, b, ttl)
	h.metrics.observe("presence_track", start, err)
	return err
}

func (h *hub) roomNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.rooms))
	for r := range h.rooms {
		out = append(out, r)
	}
	return out
}

// announce tells the room that its online list changed: with a bot notice
// while the room, after the change, has at most maxListed users; silently
// (only the users frames change) in bigger rooms. It returns the notice it
// sent (see send), nil if none.
func (h *hub) announce(ctx context.Context, room, text string, countAfter int) []byte {
	if countAfter <= maxListed {
		return h.send(ctx, room, eventNotice, text)
	}
	h.send(ctx, room, eventPresence, "")
	return nil
}

// send sends the room an event of type typ and returns its body, also when
// the layer reports an error (a publish that timed out may still arrive).
func (h *hub) send(ctx context.Context, room, typ, text string) []byte {
	var m channellayer.Message
	var err error
	if typ == eventNotice {
		m, err = noticeEvent(text)
	} else {
		m, err = channellayer.NewMessage(typ, nil)
	}
	if err == nil {
		start := time.Now()
		err = h.layer.GroupSend(ctx, room, m)
		h.metrics.observe("group_send", start, err)
	}
	if err != nil {
		h.log.Warn("announcing a presence change failed", "room", room, "err", err)
	}
	return m.Body
}
