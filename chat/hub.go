package chat

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/fold"
	"github.com/chatterpro/chatterpro/presence"
)

// hub is the node's view of its rooms: which local sockets are in which
// room, and the work done once per node rather than once per socket: the
// users frame of a room, encoded once and sent to its local sockets at most
// once per interval, and the join and leave notices of a presence diff,
// encoded once. Presence itself (tracking, refresh, grace, a dead node's
// entries) is the framework's (consumer.Conn.Track).
type hub struct {
	server   *consumer.Server
	interval time.Duration
	log      *slog.Logger
	metrics  *metrics
	counted  func(room string, online int) // each room's count, as a flush lists it

	mu    sync.Mutex
	rooms map[string]*localRoom

	// diff is the last presence diff decoded (its sockets share one body),
	// under diffMu: decoding holds neither lock, so that a node's sockets
	// taking the diffs of many rooms at once do not queue behind it.
	diffMu sync.Mutex
	diff   decodedDiff

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

type localRoom struct {
	conns map[*consumer.Conn]struct{}
	dirty bool
	// sent is the hash of the last users frame sent to the room's sockets
	// (0: none yet); fresh are the sockets added since, which got their
	// own frame at join but not that one. changed: a diff since then had a
	// join or a leave, so the next frame goes to every socket.
	sent    uint64
	fresh   []freshConn
	changed bool
	// recheck: a socket was added with another frame than sent. Its
	// frame was built from the presence a moment before it was added; a
	// flush in between sent the room a newer frame, which the socket,
	// not added yet, did not get, and no change may come to bring it (a
	// person listed again after a node died, as seen by one who came back
	// at the same time). The next tick sends it the latest if it differs.
	recheck bool
	// marked are the bodies of the room's last diffs that asked for a
	// frame: every local socket takes a diff, some after the next flush,
	// and a diff must ask once (else a late socket's take of a join
	// already listed would send every socket the same frame again). Weak:
	// after a join storm, a thousand rooms' last diffs would otherwise
	// stay in memory only to be told apart.
	marked [4]weak.Pointer[byte]
	next   int
}

// freshConn is a socket added since the room's last users frame, and the
// hash of the frame it got when it joined.
type freshConn struct {
	c   *consumer.Conn
	got uint64
}

// frameSum is the hash by which the hub tells users frames apart.
func frameSum(b []byte) uint64 { return maphash.Bytes(frameSeed, b) }

// userMeta is the meta of a socket's presence entry; its key is the session.
type userMeta struct {
	Name string `json:"n"`
	At   int64  `json:"t,omitempty"` // when the socket joined, Unix ms: orders the joins of one diff
}

// notice is a join or leave notice of a diff, and whose it is.
type notice struct {
	session string
	body    []byte
}

// frameSeed hashes users frames, to tell a changed one from the last.
var frameSeed = maphash.MakeSeed()

type decodedDiff struct {
	body          []byte // the diff's body, as the layer delivered it to every socket
	notices       []notice
	joinsOrLeaves bool
}

func newHub(server *consumer.Server, interval time.Duration, log *slog.Logger, m *metrics, counted func(string, int)) *hub {
	h := &hub{
		server: server, interval: interval, log: log, metrics: m, counted: counted,
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

func (h *hub) add(room string, c *consumer.Conn, got uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil {
		r = &localRoom{conns: make(map[*consumer.Conn]struct{})}
		h.rooms[room] = r
	}
	r.conns[c] = struct{}{}
	r.fresh = append(r.fresh, freshConn{c, got})
	if r.sent != 0 && got != r.sent {
		r.recheck = true
	}
}

// remove forgets a socket. A room left without local sockets stays until
// its next flush has counted it (see flush).
func (h *hub) remove(room string, c *consumer.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.rooms[room]; r != nil {
		delete(r.conns, c)
		// Fresh sockets wait for the room's next flush, which only a
		// change brings: a socket gone meanwhile is not kept for it.
		r.fresh = slices.DeleteFunc(r.fresh, func(f freshConn) bool { return f.c == c })
	}
}

// markDirty asks for a users frame to the room's local sockets at the next tick.
func (h *hub) markDirty(room string) {
	h.mu.Lock()
	if r := h.rooms[room]; r != nil {
		r.dirty = true
	}
	h.mu.Unlock()
}

// diffed takes a presence diff of room, as each local socket receives it:
// it returns the diff's notices, and asks for a users frame at the next
// tick if someone joined or left, once per diff, whichever socket takes
// it first. A diff that only updates metas (a
// second tab, or a person back on another node while the entry of a node
// that died is still listed) changes no frame: a session's tabs share its
// name, and the frame lists sessions by name. After a node dies, every
// person back is such a diff on every node, and building each room's
// frame again to find it unchanged was most of the cost of users frames.
func (h *hub) diffed(room string, m channellayer.Message) []notice {
	d := h.decoded(m)
	if d.joinsOrLeaves && len(m.Body) > 0 {
		body := weak.Make(&m.Body[0])
		h.mu.Lock()
		if r := h.rooms[room]; r != nil && !slices.Contains(r.marked[:], body) {
			r.marked[r.next] = body
			r.next = (r.next + 1) % len(r.marked)
			r.dirty, r.changed = true, true
		}
		h.mu.Unlock()
	}
	return d.notices
}

// decoded returns the notices of a presence diff, decoded and encoded
// once for all the node's sockets (they get the same body): the last diff
// decoded is kept. Two sockets may decode the same diff at once; either
// result is the same.
func (h *hub) decoded(m channellayer.Message) decodedDiff {
	h.diffMu.Lock()
	d := h.diff
	h.diffMu.Unlock()
	if len(m.Body) > 0 && len(d.body) == len(m.Body) && &d.body[0] == &m.Body[0] {
		return d
	}
	d = decodeDiff(m)
	h.diffMu.Lock()
	h.diff = d
	h.diffMu.Unlock()
	return d
}

// roomNames lists the rooms with sockets on this node.
func (h *hub) roomNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.rooms))
	for name, r := range h.rooms {
		if len(r.conns) > 0 {
			out = append(out, name)
		}
	}
	return out
}

func (h *hub) run() {
	defer close(h.done)
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
			h.flush()
		}
	}
}

// flush sends each dirty room's latest users frame to its local sockets:
// one frame per room per tick, encoded once, built from the presence the
// node's tracker already read where it has it (see latestUsers). A frame
// that is the same as the room's last, with no join or leave since, goes
// only to the sockets added since: a second tab, or a person back on this
// node after a node died while the dead node's entry is still listed,
// changes nothing anyone sees, and must not cost every member a frame.
func (h *hub) flush() {
	h.mu.Lock()
	var dirty, recheck []string
	for name, r := range h.rooms {
		switch {
		case r.dirty:
			r.dirty, r.recheck = false, false // the flush below sees to the fresh sockets
			dirty = append(dirty, name)
		case r.recheck:
			r.recheck = false
			recheck = append(recheck, name)
		case len(r.conns) == 0:
			delete(h.rooms, name) // counted after its last socket left
		}
	}
	h.mu.Unlock()
	for _, room := range recheck {
		h.sendFresh(room)
	}
	for _, room := range dirty {
		f, err := h.latestUsers(room)
		if err != nil {
			h.log.Warn("listing a room's users failed; will retry", "room", room, "err", err)
			h.markDirty(room)
			continue
		}
		if h.counted != nil {
			h.counted(room, f.Count)
		}
		b, _ := json.Marshal(f)
		sum := frameSum(b)
		h.mu.Lock()
		var conns []*consumer.Conn
		if r := h.rooms[room]; r != nil {
			if sum == r.sent && !r.changed { // nothing anyone sees changed: only the new sockets get it,
				for _, f := range r.fresh { // and only if it is not the frame they joined with
					if _, ok := r.conns[f.c]; ok && f.got != sum {
						conns = append(conns, f.c)
					}
				}
			} else {
				for c := range r.conns {
					conns = append(conns, c)
				}
			}
			r.sent, r.fresh, r.changed = sum, nil, false
		}
		h.mu.Unlock()
		h.sendFrame(conns, b)
	}
}

// sendFresh sends the room's latest users frame to the sockets added
// since its last frame whose own frame differs from it (see recheck). The
// room's last frame stays what it was: a change not announced yet brings
// its diff, and then a frame to everyone.
func (h *hub) sendFresh(room string) {
	f, err := h.latestUsers(room)
	if err != nil {
		h.markDirty(room)
		return
	}
	b, _ := json.Marshal(f)
	sum := frameSum(b)
	var conns []*consumer.Conn
	h.mu.Lock()
	if r := h.rooms[room]; r != nil {
		for i, fc := range r.fresh {
			if _, ok := r.conns[fc.c]; ok && fc.got != sum {
				conns = append(conns, fc.c)
				r.fresh[i].got = sum
			}
		}
	}
	h.mu.Unlock()
	h.sendFrame(conns, b)
}

// sendFrame sends a users frame, encoded once, to conns.
func (h *hub) sendFrame(conns []*consumer.Conn, b []byte) {
	sent := 0
	for _, c := range conns {
		if c.Send(b) == nil {
			sent++
		}
	}
	if sent > 0 {
		h.metrics.out.add(0, sent)
	}
}

// latestUsers returns the room's users frame for a flush: from the
// presence the tracker read for its last diff of the room, without a round
// trip, where it has one; else (the room's last local socket has left, or
// its state was never read) from a List. A room is marked dirty by a diff
// (which comes after the tracker kept the state it went up to) or by a
// socket's Disconnect: a leave that changes the room brings a diff to its
// other local sockets, and a room left by its last one is listed.
func (h *hub) latestUsers(room string) (usersFrame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.knownUsers(ctx, room)
}

// knownUsers returns the room's users frame from the presence the node's
// tracker keeps, without a round trip, where it has it, else from a List.
// Right after a Track, the tracker's state has the tracked entry: a
// joiner's first frame lists the joiner, and costs no read of the room.
func (h *hub) knownUsers(ctx context.Context, room string) (usersFrame, error) {
	if who, ok := h.server.PresenceCached(room); ok {
		return newUsersFrame(room, who), nil
	}
	return h.users(ctx, room)
}

// users returns the room's users frame, cluster-wide, read from the layer.
func (h *hub) users(ctx context.Context, room string) (usersFrame, error) {
	start := time.Now()
	who, err := h.server.Presence(ctx, room)
	h.metrics.observe("presence_list", start, err)
	if err != nil {
		return usersFrame{}, err
	}
	return newUsersFrame(room, who), nil
}

// decodeDiff returns the join and leave notices of a presence diff. A
// room with more than maxListed users after the change gets none.
func decodeDiff(m channellayer.Message) decodedDiff {
	var out []notice
	var joinsOrLeaves bool
	var d presence.Diff
	if err := json.Unmarshal(m.Body, &d); err == nil {
		joinsOrLeaves = len(d.Joins)+len(d.Leaves) > 0
		type who struct {
			session, name string
			at            int64
		}
		read := func(keys map[string][]json.RawMessage) []who {
			var all []who
			for s, metas := range keys {
				if len(metas) == 0 {
					continue
				}
				if meta, ok := decodeMeta(metas[0]); ok && meta.Name != "" {
					all = append(all, who{s, meta.Name, meta.At})
				}
			}
			sort.Slice(all, func(i, j int) bool {
				if all[i].at != all[j].at {
					return all[i].at < all[j].at
				}
				return all[i].session < all[j].session
			})
			return all
		}
		add := func(w who, what string) {
			b, _ := json.Marshal(noticeFrame{Type: "notice", Text: w.name + what, Time: now()})
			out = append(out, notice{session: w.session, body: b})
		}
		// The limit counts the room after each change: a diff carries
		// several, so the joins are announced in the order they came while
		// the room, counted after each, had at most maxListed users. A key
		// in both joins and leaves came and went since the last diff: its
		// join is announced before its leave.
		joins := read(d.Joins)
		stayed := 0
		for _, w := range joins {
			if _, gone := d.Leaves[w.session]; !gone {
				stayed++
			}
		}
		before := d.Count - stayed // the room before this diff's joins
		for i, w := range joins {
			if before+i+1 <= maxListed {
				add(w, " has joined the chat")
			}
		}
		if d.Count <= maxListed {
			for _, w := range read(d.Leaves) {
				add(w, " has left the chat")
			}
		}
	}
	return decodedDiff{body: m.Body, notices: out, joinsOrLeaves: joinsOrLeaves}
}

type noticeFrame struct {
	Type string `json:"type"`
	Text string `json:"text"`
	Time string `json:"time"`
}

// newUsersFrame is the users frame of a room's presence: one entry per
// session, sorted by name case-insensitively, the first maxListed listed.
func newUsersFrame(room string, who []presence.Presence) usersFrame {
	type entry struct{ name, session string }
	all := make([]entry, 0, len(who))
	for _, p := range who {
		if len(p.Metas) == 0 {
			continue
		}
		meta, ok := decodeMeta(p.Metas[0])
		if !ok || meta.Name == "" {
			continue
		}
		all = append(all, entry{meta.Name, p.Key})
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := fold.Compare(a.name, b.name); c != 0 {
			return c
		}
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.session, b.session)
	})
	f := usersFrame{Type: "users", Room: room, Count: len(all), Users: make([]userEntry, 0, min(len(all), maxListed))}
	for i := 0; i < len(all) && i < maxListed; i++ {
		f.Users = append(f.Users, userEntry{all[i].name})
	}
	return f
}
