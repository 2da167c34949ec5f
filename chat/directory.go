package chat

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Room directory: GET /rooms lists the configured rooms and the busiest
// others with their cluster-wide online counts (one per session, as the
// users frame counts). The counts live in the layer's Directory index,
// written when a node learns a room's state (a join, a leave, a users
// frame) and refreshed while the node has members there, so a request
// reads the busiest rooms without looking at every room.
const (
	roomsIndex     = "rooms"     // the Directory index of the rooms
	maxDirectory   = 50          // rooms GET /rooms lists at most
	directoryCache = time.Second // how long a node reuses its answer
)

// roomCount is a room's count as this node last set it; failed says the
// set failed, so that the next update sets it even if it is the same.
// The refresh sets it again either way.
type roomCount struct {
	n      int
	failed bool
}

type directory struct {
	dir     channellayer.Directory
	rooms   []string      // configured, listed first
	ttl     time.Duration // an entry not refreshed within it is gone
	log     *slog.Logger
	metrics *metrics
	local   func() []string // rooms with members on this node

	mu      sync.Mutex
	counts  map[string]roomCount // the count this node last set, by room
	pending map[string]int       // changed counts run has yet to set, by room
	body    []byte               // the last answer...
	at      time.Time            // ...and when it was made

	kick chan struct{} // wakes run to set the pending counts

	stop, done chan struct{}
	stopOnce   sync.Once
}

func newDirectory(dir channellayer.Directory, rooms []string, ttl time.Duration, log *slog.Logger, m *metrics) *directory {
	return &directory{
		dir: dir, rooms: rooms, ttl: ttl, log: log, metrics: m,
		counts:  make(map[string]roomCount),
		pending: make(map[string]int),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// start sets the counts that changed, all that changed meanwhile in one
// call, and refreshes, every third of the TTL, the entries of the rooms
// that have members on this node (local lists them), until close.
func (d *directory) start(local func() []string) {
	d.local = local
	go d.run()
}

func (d *directory) close() {
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
}

func (d *directory) run() {
	defer close(d.done)
	tick := time.NewTicker(d.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-d.kick:
			d.mu.Lock()
			changed := make([]channellayer.Count, 0, len(d.pending))
			for room, n := range d.pending {
				changed = append(changed, channellayer.Count{Name: room, N: n})
			}
			clear(d.pending)
			d.mu.Unlock()
			d.setAll(changed, "updating")
		case <-tick.C:
			here := make(map[string]bool)
			for _, room := range d.local() {
				here[room] = true
			}
			d.mu.Lock()
			refresh := make([]channellayer.Count, 0, len(here))
			for room, c := range d.counts {
				if here[room] {
					refresh = append(refresh, channellayer.Count{Name: room, N: c.n})
				} else {
					delete(d.counts, room) // others' to keep, or to let expire
				}
			}
			d.mu.Unlock()
			d.setAll(refresh, "refreshing")
		}
	}
}

// setAll sets counts: in one call where the layer can
// (channellayer.DirectoryBatcher), else one call per room.
func (d *directory) setAll(counts []channellayer.Count, what string) {
	if len(counts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var err error
	failed := make([]bool, len(counts))
	if b, ok := d.dir.(channellayer.DirectoryBatcher); ok {
		err = b.SetCounts(ctx, roomsIndex, counts, d.ttl)
		for i := range failed {
			failed[i] = err != nil
		}
	} else {
		for i, c := range counts {
			if e := d.dir.SetCount(ctx, roomsIndex, c.Name, c.N, d.ttl); e != nil {
				err, failed[i] = e, true
			}
		}
	}
	// Each count, unless it has changed since, is noted set or failed.
	d.mu.Lock()
	for i, c := range counts {
		if last, here := d.counts[c.Name]; here && last.n == c.N {
			d.counts[c.Name] = roomCount{n: c.N, failed: failed[i]}
		}
	}
	d.mu.Unlock()
	d.metrics.observe("directory_set", start, err)
	if err != nil {
		d.log.Warn(what+" the room directory failed; the next change or refresh retries", "rooms", len(counts), "err", err)
	}
}

// update records a room's online count; run sets it soon, unless it is
// what this node last set (the refresh keeps that alive).
func (d *directory) update(room string, n int) {
	d.mu.Lock()
	last, ok := d.counts[room]
	if n > 0 {
		d.counts[room] = roomCount{n: n}
	} else {
		delete(d.counts, room)
	}
	if ok && last.n == n && !last.failed {
		d.mu.Unlock()
		return
	}
	d.pending[room] = n
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default: // run has been woken already
	}
}

type roomEntry struct {
	Name   string `json:"name"`
	Online int    `json:"online"`
}

// ServeHTTP serves GET /rooms.
func (d *directory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	body := d.body
	if time.Since(d.at) >= directoryCache {
		body = nil
	}
	d.mu.Unlock()
	if body == nil {
		var err error
		if body, err = d.list(r.Context()); err != nil {
			d.log.Warn("reading the room directory failed", "err", err)
			apiError(w, http.StatusServiceUnavailable, codeUnavailable, "the room directory is temporarily unavailable")
			return
		}
		d.mu.Lock()
		d.body, d.at = body, time.Now()
		d.mu.Unlock()
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// list reads the directory: the configured rooms in their order, then the
// busiest others, at most maxDirectory in all.
func (d *directory) list(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	counts, err := d.dir.Counts(ctx, roomsIndex, d.rooms)
	if err == nil {
		var top []channellayer.Count
		top, err = d.dir.Top(ctx, roomsIndex, maxDirectory)
		if err == nil {
			d.metrics.observe("directory_read", start, nil)
			out := struct {
				Rooms []roomEntry `json:"rooms"`
			}{Rooms: make([]roomEntry, 0, maxDirectory)}
			for i, room := range d.rooms {
				if len(out.Rooms) < maxDirectory {
					out.Rooms = append(out.Rooms, roomEntry{room, counts[i]})
				}
			}
			for _, c := range top {
				if len(out.Rooms) < maxDirectory && !slices.Contains(d.rooms, c.Name) {
					out.Rooms = append(out.Rooms, roomEntry{c.Name, c.N})
				}
			}
			return json.Marshal(out)
		}
	}
	d.metrics.observe("directory_read", start, err)
	return nil, err
}
