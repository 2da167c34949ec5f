package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Options configures a Tracker. The zero value is ready to use.
type Options struct {
	// TTL is how long the entries of a process that died without a
	// goodbye outlive it. Entries are refreshed every TTL/3, a share of
	// the groups at each Interval. Defaults to 30 s.
	TTL time.Duration
	// Interval is the least time between two diffs of one group on this
	// process (a burst of changes makes one diff with the latest state;
	// a change after a quiet spell goes at once), and how often the groups
	// are swept for expired entries. Defaults to 1 s.
	Interval time.Duration
	// Logger receives the tracker's warnings. Defaults to slog.Default().
	Logger *slog.Logger
}

// Tracker keeps one process's presence entries in groups on a layer that
// implements channellayer.Presence. Each entry has an ID, unique in the
// cluster (a connection's channel name), a key that merges entries (a user,
// a session) and a meta. Diffs go, as layer events of type DiffType, to the
// channels named by the IDs of the group's entries on this process.
//
// All methods are safe for concurrent use. Close stops it.
type Tracker struct {
	layer   channellayer.Layer
	p       channellayer.Presence
	opts    Options
	log     *slog.Logger
	channel string // receives the change signals of the groups tracked here

	mu     sync.Mutex
	groups map[string]*group
	unsent map[string]*unsent // what the signals that could not be sent said, by group
	// outbox holds the signals of Track and Leave, by group in the order
	// they came, until the sender sends them (see post).
	outbox map[string][]signalBody
	// sendMu is held while a signal of post or the outbox is sent: once
	// sendPosted returns, everything posted before it was called has been
	// sent or kept to be sent again.
	sendMu sync.Mutex
	// lost are entries of this process that a sweep removed while they
	// are still tracked here (their refresh came too late): written back
	// and announced at the next tick.
	lost []entryRef

	// refreshMu orders the writes of entries by refreshes (read-locked:
	// chunks go in parallel) before the last word of an entry that leaves
	// (locked): a refresh must not write back an entry that has just left.
	// It is held for one chunk at a time, so a Leave waits for the chunks
	// in flight at most.
	refreshMu sync.RWMutex
	// parallel is how many chunks of a refresh are written at a time
	// (refreshParallel; tests set 1).
	parallel int

	// joinMu orders, per group (one mutex for the groups of a stripe),
	// Track's joining of a group's signals before the group is made with
	// the leaving of them after its last local entry left (see forget):
	// a leave that checked for the group before a Track made it again
	// must not take the signals away from it.
	joinMu [joinStripes]sync.Mutex

	// sweepSeed and sweepTick pick the groups each sweep takes (see
	// sweepsAt); both belong to the run loop.
	sweepSeed maphash.Seed
	sweepTick uint64

	wake      chan struct{}
	posted    chan struct{} // the outbox has signals
	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
}

type group struct {
	entries map[string]*entry // the local ones, by ID

	live      live             // the group's state as this tracker knows it (see live.go)
	known     bool             // live was read from the layer at least once
	reread    bool             // live is to be read in full at the next flush
	reads     int              // full reads under way
	pending   []op             // the changes signalled while reads > 0
	touched   map[string]touch // keys changed since the last diff
	repairAt  time.Time        // when live is next read in full, to repair what lost signals missed
	repairDue bool             // that time has come
	dirty     bool
	lastFlush time.Time
	// sweepAt is when the group is next swept where the layer tells when
	// its next entry expires (channellayer.PresenceSweeper): zero means
	// at the next tick.
	sweepAt time.Time
}

type entry struct {
	id, key string
	info    []byte // what the layer stores (see info)
	// written is when the last write of the entry that worked began
	// (UnixNano): it expires a TTL after that at the earliest (see
	// writeBack).
	written int64
}

// info is what an entry's layer record holds.
type info struct {
	// Format is the version of this encoding, infoFormat; none (0) in
	// infos of format 1, the releases before versions, which read this
	// one too (they ignore the field).
	Format int             `json:"v"`
	Key    string          `json:"k"`
	Meta   json.RawMessage `json:"m,omitempty"`
	Since  int64           `json:"t"`           // when it was first tracked, ns by its process's clock: orders the metas of a key
	Grace  bool            `json:"g,omitempty"` // its connection is lost and may come back
}

// infoFormat is the format version of the infos a tracker writes. Later
// versions may add fields, never change these.
const infoFormat = 2

// signalPrefix starts the name of the group that carries a group's change
// signals between trackers (its members are trackers, never connections).
const signalPrefix = "presence\x1f"

const signalType = "presence.changed"

// signalCapacity is how many change signals the tracker's channel holds
// where the layer lets it choose (channellayer.ChannelCapacity): a burst
// of joins, such as a node's clients coming back on the others, must not
// overflow it, since an overflow makes the tracker read every group again.
const signalCapacity = 10000

// signalBody is what a change signal says: the entries that were set
// (tracked, or given a new meta) and those that are gone. A signal with
// neither asks every tracker to read the group in full; trackers before
// incremental signals sent only such signals, with the key and meta of a
// join (Key, Meta), and read the group in full on every signal.
type signalBody struct {
	Key  string          `json:"k,omitempty"`
	Meta json.RawMessage `json:"m,omitempty"`
	Set  []signalEntry   `json:"s,omitempty"`
	Gone []signalEntry   `json:"x,omitempty"`
	// Due, ms since the epoch, asks every tracker to sweep the group then:
	// an entry of it waits out a grace period until that time, sooner
	// than its sweep would otherwise come. A signal with Due alone changes
	// nothing else; trackers before Due read it as a request for a full
	// read.
	Due int64 `json:"d,omitempty"`
}

// signalEntry is one entry of a signal: its ID, and its info when it was
// set or its key when it is gone.
type signalEntry struct {
	ID   string          `json:"i"`
	Info json.RawMessage `json:"n,omitempty"`
	Key  string          `json:"k,omitempty"`
}

// ops decodes the changes a signal carries; full is true when it asks for
// a full read instead.
func (b signalBody) ops() (ops []op, full bool) {
	if len(b.Set) == 0 && len(b.Gone) == 0 {
		return nil, b.Due == 0 // only a due sweep: nothing changed
	}
	for _, e := range b.Set {
		if o, ok := setOp(e.ID, e.Info); ok {
			ops = append(ops, o)
		}
	}
	for _, e := range b.Gone {
		if e.Key != "" {
			ops = append(ops, op{id: idHash(e.ID), key: e.Key, gone: true})
		}
	}
	return ops, false
}

// New returns a tracker on layer, which must implement channellayer.Presence.
func New(ctx context.Context, layer channellayer.Layer, opts Options) (*Tracker, error) {
	p, ok := layer.(channellayer.Presence)
	if !ok {
		return nil, fmt.Errorf("presence: the layer %T does not implement channellayer.Presence", layer)
	}
	if opts.TTL < 0 || opts.Interval < 0 {
		return nil, errors.New("presence: Options.TTL and Options.Interval must not be negative")
	}
	if opts.TTL == 0 {
		opts.TTL = 30 * time.Second
	}
	if opts.Interval == 0 {
		opts.Interval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var ch string
	var err error
	if c, ok := layer.(channellayer.ChannelCapacity); ok {
		ch, err = c.NewChannelCapacity(ctx, signalCapacity)
	} else {
		ch, err = layer.NewChannel(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("presence: creating the tracker's channel: %w", err)
	}
	t := &Tracker{
		layer: layer, p: p, opts: opts, log: opts.Logger, channel: ch,
		groups: make(map[string]*group),
		unsent: make(map[string]*unsent), parallel: refreshParallel,
		outbox:    make(map[string][]signalBody),
		sweepSeed: maphash.MakeSeed(),
		wake:      make(chan struct{}, 1),
		posted:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	t.done.Add(4)
	go t.receive()
	go t.run()
	go t.refreshLoop()
	go t.sendLoop()
	return t, nil
}

// Close stops the tracker. Its entries are no longer refreshed: they
// expire after the TTL unless their IDs are tracked again elsewhere.
func (t *Tracker) Close(ctx context.Context) error {
	t.closeOnce.Do(func() {
		close(t.stop)
		_ = t.layer.DiscardChannel(ctx, t.channel)
	})
	done := make(chan struct{})
	go func() { t.done.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Track adds the entry id (unique in the cluster: a connection's channel)
// with key and meta (any value that encodes as JSON; keep it small) to
// group, or replaces its key and meta. Diffs of the group reach the channel
// named id, as layer events of type DiffType.
func (t *Tracker) Track(ctx context.Context, groupName, key, id string, meta any) error {
	if groupName == "" || key == "" || id == "" {
		return fmt.Errorf("presence: Track needs a group, a key and an ID: %w", channellayer.ErrInvalid)
	}
	var m json.RawMessage
	if meta != nil {
		b, err := json.Marshal(meta)
		if err != nil {
			return fmt.Errorf("presence: encoding the meta of %q: %w", key, err)
		}
		m = b
	}
	join := t.joinLock(groupName)
	join.Lock()
	if err := t.layer.GroupAdd(ctx, signalPrefix+groupName, t.channel); err != nil {
		join.Unlock()
		return fmt.Errorf("presence: joining the signals of %q: %w", groupName, err)
	}
	t.mu.Lock()
	g := t.groups[groupName]
	first := g == nil
	if first {
		// reads: the signals that come before the first read are kept
		// for it.
		g = &group{entries: make(map[string]*entry), reads: 1}
		t.groups[groupName] = g
	}
	e := g.entries[id]
	since := time.Now().UnixNano()
	if e != nil {
		var old info
		if json.Unmarshal(e.info, &old) == nil {
			since = old.Since
		}
	}
	in := info{Format: infoFormat, Key: key, Meta: m, Since: since}
	b, _ := json.Marshal(in)
	e = &entry{id: id, key: key, info: b, written: time.Now().UnixNano()}
	g.entries[id] = e
	t.mu.Unlock()
	join.Unlock()

	if err := t.p.Track(ctx, groupName, id, b, t.opts.TTL); err != nil {
		if first {
			t.mu.Lock()
			g.endRead()
			t.mu.Unlock()
		}
		t.forget(groupName, id)
		return fmt.Errorf("presence: tracking %q in %q: %w", key, groupName, err)
	}
	if first {
		// A group new here starts from its state now: its first entry
		// learns the state from List, and changes from diffs.
		fresh, err := t.readLive(ctx, groupName)
		t.mu.Lock()
		if err == nil {
			g.install(fresh)
			g.repairAt = t.repairTime()
		} else {
			g.reread, g.dirty = true, true // the next flush reads it
		}
		g.endRead()
		t.mu.Unlock()
	} else {
		// The group's state here has the entry at once, not when its
		// signal comes back (applying that again changes nothing): a
		// joiner's first view of the group can then come from Cached,
		// without reading the whole group from the layer.
		t.mu.Lock()
		g.apply([]op{infoOp(id, in)})
		t.mu.Unlock()
	}
	t.post(groupName, signalBody{Key: key, Meta: m, Set: []signalEntry{{ID: id, Info: b}}})
	return nil
}

// Leave removes the entry id from group. With a grace period, the entry
// stays listed that long (its connection may come back under the same key:
// then nobody sees a leave), and is removed by the sweep after. Without
// one it goes at once; final then also removes the key's entries that wait
// out a grace period, unless the key has another live entry: a leave on
// purpose is final.
func (t *Tracker) Leave(ctx context.Context, groupName, id string, grace time.Duration, final bool) error {
	t.refreshMu.Lock()
	defer t.refreshMu.Unlock()
	e := t.forget(groupName, id)
	if e == nil {
		return nil
	}
	if grace > 0 && !final {
		// Listed until the sweep removes it, unless its key comes back:
		// nothing changes for the other trackers yet.
		var in info
		_ = json.Unmarshal(e.info, &in)
		in.Grace = true
		in.Format = infoFormat
		b, _ := json.Marshal(in)
		due := time.Now().Add(grace)
		if err := t.p.Track(ctx, groupName, id, b, grace); err != nil {
			return fmt.Errorf("presence: leaving %q: %w", groupName, err)
		}
		// Its sweep is due sooner than the group's next one (see sweep):
		// every tracker of the group learns when. The signal names no
		// entry: one that told of this entry could come after the signal
		// of its removal (a final leave of its key on another process) and
		// list it again. For the same reason the signal of its Track, if
		// not sent yet, is not sent at all.
		t.unpost(groupName, id)
		t.post(groupName, signalBody{Due: due.UnixMilli() + 1})
		return nil
	}
	gone := []signalEntry{{ID: id, Key: e.key}}
	err := t.p.Untrack(ctx, groupName, id)
	if err == nil && final {
		var waiting []signalEntry
		waiting, err = t.untrackWaiting(ctx, groupName, e.key)
		gone = append(gone, waiting...)
	}
	t.post(groupName, signalBody{Gone: gone})
	if err != nil {
		return fmt.Errorf("presence: leaving %q: %w", groupName, err)
	}
	return nil
}

// untrackWaiting removes the entries of key that wait out a grace period,
// unless key has a live entry, and returns those it removed.
func (t *Tracker) untrackWaiting(ctx context.Context, groupName, key string) ([]signalEntry, error) {
	members, err := t.p.List(ctx, groupName)
	if err != nil {
		return nil, err
	}
	var waiting []signalEntry
	for _, m := range members {
		var in info
		if json.Unmarshal(m.Info, &in) != nil || in.Key != key {
			continue
		}
		if !in.Grace {
			return nil, nil // another tab is still here
		}
		waiting = append(waiting, signalEntry{ID: m.Key, Key: key})
	}
	for i, w := range waiting {
		if err := t.p.Untrack(ctx, groupName, w.ID); err != nil {
			return waiting[:i], err
		}
	}
	return waiting, nil
}

// forget removes an entry from the local state and returns it, nil if it
// was not tracked here. The group's signals are left once it has no entry.
func (t *Tracker) forget(groupName, id string) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[groupName]
	if g == nil {
		return nil
	}
	e := g.entries[id]
	delete(g.entries, id)
	if len(g.entries) == 0 {
		delete(t.groups, groupName)
		go func() { // not under the lock; a later Track joins again
			join := t.joinLock(groupName)
			join.Lock()
			defer join.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			t.mu.Lock()
			back := t.groups[groupName] != nil
			t.mu.Unlock()
			if !back {
				_ = t.layer.GroupDiscard(ctx, signalPrefix+groupName, t.channel)
			}
		}()
	}
	return e
}

// joinStripes is how many mutexes joinMu has.
const joinStripes = 64

func (t *Tracker) joinLock(groupName string) *sync.Mutex {
	return &t.joinMu[maphash.String(idSeed, groupName)%joinStripes]
}

// List returns the group's presence, cluster-wide: one Presence per key,
// sorted by key, each with the metas of its entries, oldest first. Entries
// waiting out a grace period are listed.
func (t *Tracker) List(ctx context.Context, groupName string) ([]Presence, error) {
	s, err := t.state(ctx, groupName)
	if err != nil {
		return nil, err
	}
	return s.list(), nil
}

// Cached returns the group's presence as this tracker knows it, with no
// call to the layer: the state read when the group's first local entry was
// tracked, kept up to date from the change signals of the group since. ok
// is false when the tracker has no such state: no entry of the group is
// tracked here, or its read failed.
//
// It lags the layer by the time a signal takes to arrive, and is never
// behind the diffs: a change is in it before the diff that tells it
// reaches the group's local entries. A key whose entries are all gone
// stays in it, with its metas of the last diff, until the next diff is
// taken: signals from two processes can come in either order, and a
// person back on another process may be gone here for a moment between
// the sweep of the old entry and the set of the new. A list read then
// lacked the person, and the diff, which compares with the last diff only,
// told of a meta update that asks nobody to look again. Read it when a
// diff arrives, and call List when ok is false. The metas are shared: do
// not modify them.
func (t *Tracker) Cached(groupName string) (list []Presence, ok bool) {
	t.mu.Lock()
	g := t.groups[groupName]
	if g == nil || !g.known {
		t.mu.Unlock()
		return nil, false
	}
	list = g.withPendingLeaves(g.live.presences()) // copies: the live state changes under t.mu
	t.mu.Unlock()
	sortPresences(list)
	return list, true
}

// state reads the group's state from the layer.
func (t *Tracker) state(ctx context.Context, groupName string) (state, error) {
	l, err := t.readLive(ctx, groupName)
	if err != nil {
		return nil, err
	}
	return l.state(), nil
}

// readLive reads the group's live state from the layer.
func (t *Tracker) readLive(ctx context.Context, groupName string) (live, error) {
	members, err := t.p.List(ctx, groupName)
	if err != nil {
		return live{}, fmt.Errorf("presence: listing %q: %w", groupName, err)
	}
	return liveOf(members), nil
}

// repairTime is when a group whose state was just read is read again in
// full, to repair what lost signals may have missed (a signal sent while a
// subscription was being replaced): after three to six TTLs, spread so
// that the groups of a process are not read all at once. A signal that
// failed is sent again at the next tick (see signal), and dropped signals
// make a tracker read every group (see receive); this is the net
// under what nobody noticed, and it costs a full read of every group (at
// 100 000 people on 8 nodes, repairs every one to two TTLs took 2 to 9 %
// of the nodes' CPU).
func (t *Tracker) repairTime() time.Time {
	return time.Now().Add(3*t.opts.TTL + rand.N(3*t.opts.TTL))
}

// signal tells every tracker of the group (this one too) what changed; a
// body with no entries asks them to read the group in full. A signal that
// cannot be sent is sent again at the next tick (see resendFailed). It has
// no deadline of its caller's: one cut short could be sent after all, and
// the layer bounds a send (Redis: its batch's 5 s).
func (t *Tracker) signal(groupName string, b signalBody) {
	m, _ := channellayer.NewMessage(signalType, b)
	if err := t.layer.GroupSend(context.Background(), signalPrefix+groupName, m); err != nil {
		t.log.Warn("presence: signalling a change failed; will send it again", "group", groupName, "err", err)
		t.mu.Lock()
		u := t.unsent[groupName]
		if u == nil {
			u = &unsent{entries: make(map[string]signalEntry)}
			t.unsent[groupName] = u
		}
		u.add(b)
		t.mu.Unlock()
		t.wakeUp()
	}
}

// unsent is what the signals of a group that could not be sent said: the
// last thing said of each entry, by ID, whether a full read was asked
// for, and the earliest sweep asked for (Due).
type unsent struct {
	entries map[string]signalEntry
	full    bool
	due     int64
}

func (u *unsent) add(b signalBody) {
	if len(b.Set) == 0 && len(b.Gone) == 0 && b.Due == 0 {
		u.full = true
	}
	for _, e := range b.Set {
		u.entries[e.ID] = e
	}
	for _, e := range b.Gone {
		u.entries[e.ID] = e
	}
	if b.Due > 0 && (u.due == 0 || b.Due < u.due) {
		u.due = b.Due // the earliest: its sweep learns of any later one
	}
}

// body is the signal to send again: what is true now of the entries the
// unsent signals named. An entry tracked here is set with its info now;
// any other is said again as it was (gone, or set while it waits out a
// grace period). Sending that later, rather than asking every tracker to
// read the group in full, keeps a loaded layer from being asked for every
// group again by every process, while the signals fail for its load.
func (u *unsent) body(g *group) signalBody {
	if u.full {
		return signalBody{}
	}
	b := signalBody{Due: u.due}
	for id, e := range u.entries {
		if g != nil {
			if mine := g.entries[id]; mine != nil {
				b.Set = append(b.Set, signalEntry{ID: id, Info: mine.info})
				continue
			}
		}
		if e.Info != nil {
			b.Set = append(b.Set, e)
		} else {
			b.Gone = append(b.Gone, e)
		}
	}
	return b
}

// post sends a signal of Track or Leave. When no other is being sent, it
// goes at once and the caller waits for it, so that the other trackers
// learn of a join before its Track returns. Otherwise it is queued for the
// sender and the caller returns: a join or a leave then waits for its own
// write to the layer, not for the publish that tells the other trackers.
// When a node dies and its people all come back on the others, that
// publish waited in line with the rooms' chat messages and was most of a
// join's time. The signals of a group go in the order they came; sets
// queued one behind the other (joins in one room, while the sender was
// busy) go as one signal.
func (t *Tracker) post(groupName string, b signalBody) {
	if t.sendMu.TryLock() {
		t.mu.Lock()
		idle := len(t.outbox) == 0
		t.mu.Unlock()
		if idle { // nothing ahead of it; what comes meanwhile waits for sendMu
			t.signal(groupName, b)
			t.sendMu.Unlock()
			return
		}
		t.sendMu.Unlock()
	}
	t.mu.Lock()
	q := t.outbox[groupName]
	if n := len(q); n > 0 && setsOnly(q[n-1]) && setsOnly(b) && len(q[n-1].Set) < maxSetsPerSignal {
		last := &q[n-1]
		last.Key, last.Meta = "", nil // several joins: Key and Meta name one
		last.Set = append(last.Set, b.Set...)
	} else {
		t.outbox[groupName] = append(q, b)
	}
	t.mu.Unlock()
	select {
	case t.posted <- struct{}{}:
	default:
	}
}

// unpost drops the entry id from the sets of group's unsent signals.
func (t *Tracker) unpost(groupName, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.outbox[groupName]
	for i := range q {
		if len(q[i].Set) > 0 {
			q[i].Set = slices.DeleteFunc(slices.Clone(q[i].Set), func(e signalEntry) bool { return e.ID == id })
		}
	}
	q = slices.DeleteFunc(q, func(b signalBody) bool { return len(b.Set) == 0 && len(b.Gone) == 0 && b.Due == 0 })
	if len(q) == 0 {
		delete(t.outbox, groupName)
	} else {
		t.outbox[groupName] = q
	}
}

// maxSetsPerSignal bounds the entries that posts merge into one signal.
const maxSetsPerSignal = 64

func setsOnly(b signalBody) bool { return len(b.Set) > 0 && len(b.Gone) == 0 && b.Due == 0 }

// sendLoop sends what post queued, and what is left of it at Close.
func (t *Tracker) sendLoop() {
	defer t.done.Done()
	for {
		select {
		case <-t.stop:
			t.sendPosted()
			return
		case <-t.posted:
			t.sendPosted()
		}
	}
}

// sendPosted sends the outbox: the groups at once (see signalAll), the
// signals of each in order. One that fails is kept to be sent again (see
// signal).
func (t *Tracker) sendPosted() {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	t.mu.Lock()
	out := t.outbox
	if len(out) == 0 {
		t.mu.Unlock()
		return
	}
	t.outbox = make(map[string][]signalBody, len(out))
	t.mu.Unlock()
	eachAtOnce(out, func(name string, bodies []signalBody) {
		for _, b := range bodies {
			t.signal(name, b)
		}
	})
}

func (t *Tracker) wakeUp() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// resendFailed sends again what the signals that could not be sent said
// (see unsent.body).
func (t *Tracker) resendFailed() {
	t.mu.Lock()
	bodies := make(map[string]signalBody, len(t.unsent))
	for name, u := range t.unsent {
		bodies[name] = u.body(t.groups[name])
	}
	clear(t.unsent)
	t.mu.Unlock()
	if len(bodies) == 0 {
		return
	}
	t.signalAll(bodies)
}

// receive takes the change signals of the groups tracked here.
func (t *Tracker) receive() {
	defer t.done.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-t.stop; cancel() }()
	for {
		m, err := t.layer.Receive(ctx, t.channel)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, channellayer.ErrClosed) || errors.Is(err, channellayer.ErrNoChannel) {
				return
			}
			if errors.Is(err, channellayer.ErrOverflow) {
				t.log.Warn("presence: change signals were dropped; reading every group again")
				t.rereadAll()
				continue
			}
			t.log.Warn("presence: receiving change signals failed", "err", err)
			select {
			case <-t.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if len(m.Group) > len(signalPrefix) {
			var b signalBody
			_ = json.Unmarshal(m.Body, &b)
			t.received(m.Group[len(signalPrefix):], b)
		}
	}
}

// received applies one change signal of a group.
func (t *Tracker) received(groupName string, b signalBody) {
	t.mu.Lock()
	g := t.groups[groupName]
	if g == nil {
		t.mu.Unlock()
		return
	}
	if len(b.Gone) > 0 {
		// An entry still tracked here is alive, whoever swept it: it
		// stays in this tracker's state, and is written back and
		// announced again for the others.
		keep := b.Gone[:0:0]
		for _, e := range b.Gone {
			if g.entries[e.ID] != nil {
				t.lost = append(t.lost, entryRef{groupName, e.ID})
			} else {
				keep = append(keep, e)
			}
		}
		if len(keep) == 0 && len(b.Set) == 0 {
			t.mu.Unlock()
			return
		}
		b.Gone = keep
	}
	if b.Due > 0 {
		if due := time.UnixMilli(b.Due); !g.sweepAt.IsZero() && due.Before(g.sweepAt) {
			g.sweepAt = due
		}
		if len(b.Set) == 0 && len(b.Gone) == 0 {
			t.mu.Unlock()
			return
		}
	}
	ops, full := b.ops()
	if full {
		g.reread = true
		if b.Key != "" { // a join, from a tracker before incremental signals
			g.touch(b.Key)
			if tc := g.touched[b.Key]; tc.before == nil {
				tc.came = b.Meta
				if tc.came == nil {
					tc.came = json.RawMessage("null")
				}
				g.touched[b.Key] = tc
			}
		}
	}
	g.apply(ops)
	g.dirty = true
	t.mu.Unlock()
	t.wakeUp()
}

// rereadAll makes every group's state due for a full read.
func (t *Tracker) rereadAll() {
	t.mu.Lock()
	for _, g := range t.groups {
		g.reread, g.dirty = true, true
	}
	t.mu.Unlock()
	t.wakeUp()
}

// run flushes diffs and sweeps expired entries.
func (t *Tracker) run() {
	defer t.done.Done()
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.wake:
			t.flush(false)
		case <-tick.C:
			t.resendFailed()
			t.rewriteLost()
			t.sweep()
			t.flush(true)
		}
	}
}

// refreshLoop refreshes the local entries every TTL/3, and those whose
// refresh failed at every Interval. It runs beside run: a sweep or a flush
// that waits on a loaded layer must not hold up the refresh, or the
// entries of this process expire while it is alive.
//
// The entries are refreshed in turns (refreshTurns, one per Interval), the
// groups of one turn at each tick, not all at once: on Redis 100 000
// entries written in one go held the one server's thread for about half a
// second, every publish of the cluster waiting behind them (chat
// deliveries then came seconds late in bursts, every TTL/3).
func (t *Tracker) refreshLoop() {
	defer t.done.Done()
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	turns := t.refreshTurns()
	every := t.opts.TTL / 3 / time.Duration(turns) // between two turns
	last, next := time.Now(), 0                    // the last turn taken, the next turn
	// failed: the entries whose last refresh failed; they are tried again
	// at the next tick (see writeBack for those that expired meanwhile).
	var failed []entryRef
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		refs := failed
		// The turns due since the last (more than one when ticks were
		// missed: each entry still comes round within TTL/3).
		if due := int(time.Since(last) / every); due > 0 {
			last = last.Add(time.Duration(due) * every)
			refs = append(refs, t.refreshDue(next, min(due, turns), turns)...)
			next = (next + due) % turns
		}
		if len(refs) == 0 {
			failed = nil
			continue
		}
		start := time.Now()
		f := t.refreshRefs(refs)
		if took := time.Since(start); took > t.opts.TTL/3 {
			t.log.Warn("presence: refreshing the entries took longer than the refresh period; entries may expire before their refresh (the layer is overloaded, or the TTL too short)",
				"took", took.Round(time.Millisecond), "period", t.opts.TTL/3)
		}
		failed = f
	}
}

// refreshTurns is how many turns the entries are refreshed in: one per
// Interval in TTL/3, at most maxRefreshTurns.
func (t *Tracker) refreshTurns() int {
	return int(min(max(t.opts.TTL/3/t.opts.Interval, 1), maxRefreshTurns))
}

const maxRefreshTurns = 60

// refreshDue returns the local entries of the n turns from first (of
// turns). A group's turn is fixed by its name's hash: its entries are
// written together (one script call per group on Redis) and expire
// together (one sweep when they do).
func (t *Tracker) refreshDue(first, n, turns int) []entryRef {
	t.mu.Lock()
	defer t.mu.Unlock()
	var due []*group
	var names []string
	size := 0
	for name, g := range t.groups {
		if n >= turns || (int(idHash(name)%uint64(turns))-first+turns)%turns < n {
			due, names = append(due, g), append(names, name)
			size += len(g.entries)
		}
	}
	refs := make([]entryRef, 0, size)
	for i, g := range due {
		for id := range g.entries {
			refs = append(refs, entryRef{names[i], id})
		}
	}
	return refs
}

// signalParallel bounds the signals a sweep or an announce has in flight
// at once.
const signalParallel = 256

// signalAll sends the signals of many groups at once: concurrently, so
// that the layer sends them in a few round trips (the Redis layer
// pipelines the publishes that queue up meanwhile) rather than one round
// trip after the other, which on a loaded layer would hold up the caller
// for as many round trips as there are groups.
func (t *Tracker) signalAll(bodies map[string]signalBody) {
	if len(bodies) == 1 {
		for name, b := range bodies {
			t.signal(name, b)
		}
		return
	}
	eachAtOnce(bodies, t.signal)
}

// eachAtOnce calls f for every group of m, at most signalParallel at once,
// and returns when all have returned.
func eachAtOnce[T any](m map[string]T, f func(name string, v T)) {
	names := slices.Collect(maps.Keys(m))
	inChunks(names, 1, signalParallel, func(one []string) { f(one[0], m[one[0]]) })
}

func (t *Tracker) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// flushChunk bounds the groups whose states one flush reads in one call.
const flushChunk = 500

// pendingDiff is a diff and the local channels it goes to.
type pendingDiff struct {
	d   Diff
	ids []string
}

// flush sends each dirty group's diff to its local entries: at most one per
// group per Interval (a group flushed less than Interval ago waits for the
// tick, when late says so). Most diffs come from the live states the change
// signals keep; the groups due for a full read (new here after a failed
// read, lost signals, repair) are read in one call per flushChunk groups
// where the layer can.
func (t *Tracker) flush(late bool) {
	now := time.Now()
	var diffs []pendingDiff
	var reads []groupRef
	t.mu.Lock()
	repairs := 0
	for name, g := range t.groups {
		if late && !g.repairAt.IsZero() && now.After(g.repairAt) {
			g.repairDue, g.dirty = true, true
			g.repairAt = time.Time{}
		}
		if !g.dirty || (!late && now.Sub(g.lastFlush) < t.opts.Interval) {
			continue
		}
		g.dirty = false
		g.lastFlush = now
		needed := g.reread || !g.known
		// Repair reads are not urgent: at most flushChunk per flush, the
		// rest at the next.
		repair := !needed && g.repairDue && repairs < flushChunk
		if needed || repair {
			if repair {
				repairs++
			}
			g.reread, g.repairDue = false, false
			g.reads++
			reads = append(reads, groupRef{name, g, repair})
			continue
		}
		if g.repairDue {
			g.dirty = true
		}
		if d := g.takeDiff(name); !d.Empty() {
			diffs = append(diffs, pendingDiff{d, g.localIDs()})
		}
	}
	t.mu.Unlock()
	t.deliver(diffs)
	for start := 0; start < len(reads); start += flushChunk {
		t.reread(reads[start:min(len(reads), start+flushChunk)])
	}
}

func (g *group) localIDs() []string {
	ids := make([]string, 0, len(g.entries))
	for id := range g.entries {
		ids = append(ids, id)
	}
	return ids
}

// groupRef is a group by name and the group itself: a group that is gone
// and back after a read began is not the one read.
type groupRef struct {
	name   string
	g      *group
	repair bool // read only to repair: after a failure it waits, rather than going again at the next flush
}

// reread reads the states of groups in full (one ListAll where the layer
// is a channellayer.PresenceLister, else one List per group), installs
// them and delivers the diffs. A group that could not be read is read
// again at the next tick; one warning tells of them all.
func (t *Tracker) reread(refs []groupRef) {
	names := make([]string, len(refs))
	for i, r := range refs {
		names[i] = r.name
	}
	all, err := t.listGroups(names, len(names), 1) // one round trip where the layer lists at once
	states := make(map[string]live, len(all))
	for name, ms := range all {
		states[name] = liveOf(ms)
	}
	var diffs []pendingDiff
	failed := 0
	t.mu.Lock()
	for _, r := range refs {
		name, g := r.name, r.g
		if t.groups[name] != g { // gone, and maybe back, meanwhile
			continue
		}
		fresh, ok := states[name]
		if !ok {
			failed++
			if r.repair {
				g.repairAt = time.Now().Add(t.opts.Interval + rand.N(t.opts.TTL/3+1))
			} else {
				g.reread, g.dirty = true, true
			}
			g.endRead()
			continue
		}
		g.install(fresh)
		g.repairAt = t.repairTime()
		g.endRead()
		if d := g.takeDiff(name); !d.Empty() {
			diffs = append(diffs, pendingDiff{d, g.localIDs()})
		}
	}
	t.mu.Unlock()
	if failed > 0 {
		t.log.Warn("presence: listing groups failed; will retry", "groups", failed, "err", err)
	}
	t.deliver(diffs)
}

// deliver sends each diff to its channels. They are this process's own:
// a send never waits (a full channel refuses it), so the sends have no
// deadline. One deadline for all of them dropped the diffs left when a
// process starved of CPU took longer than it for thousands of sends, and
// their rooms' users frames stayed as they were before the change.
func (t *Tracker) deliver(diffs []pendingDiff) {
	if len(diffs) == 0 {
		return
	}
	ctx := context.Background()
	for _, pd := range diffs {
		m, err := channellayer.NewMessage(DiffType, pd.d)
		if err != nil {
			t.log.Error("presence: encoding a diff failed", "group", pd.d.Group, "err", err)
			continue
		}
		for _, id := range pd.ids {
			if err := t.layer.Send(ctx, id, m); err != nil && !errors.Is(err, channellayer.ErrNoChannel) {
				t.log.Debug("presence: delivering a diff failed", "group", pd.d.Group, "channel", id, "err", err)
			}
		}
	}
}

// maxSweepEvery bounds sweepEvery, in ticks.
const maxSweepEvery = 4

// sweepEvery is how many ticks apart a tracker sweeps each group where the
// layer does not tell when entries expire (and how long it waits to sweep
// again after a sweep failed where it does): a tenth of the TTL (at least every tick, at most every maxSweepEvery). A group
// tracked by several processes is swept by each at a tick of its own (the
// tick depends on a seed of the process's), so a dead process's entries
// are still found about every sweepEvery/n ticks, n the processes left,
// and at most sweepEvery ticks after they expire. At a 30 s TTL and 1 s
// ticks a process sweeps each group every 3 s instead of every second (at
// 100 000 people on 8 nodes, sweeps were 16 000 of the 28 000 Redis
// commands a second with nobody talking).
func (t *Tracker) sweepEvery() uint64 {
	n := t.opts.TTL / (10 * t.opts.Interval)
	return uint64(min(max(n, 1), maxSweepEvery))
}

// sweepsAt reports whether the sweep of tick takes the group.
func (t *Tracker) sweepsAt(name string, tick, every uint64) bool {
	return every <= 1 || (maphash.String(t.sweepSeed, name)+tick)%every == 0
}

// sweep removes the expired entries of the groups tracked here that are
// due and tells every tracker of such a group which are gone. Where the
// layer tells when a group's next entry expires (PresenceSweeper), a group
// is due then, or a TTL after its last sweep if that is sooner (an entry
// written since with a shorter life than the TTL gives, a grace period,
// comes with a signal saying when, see Leave): while every process of a
// group refreshes its entries, the group is swept about once per TTL, not
// every few seconds, and a dead process's entries go the tick after they
// expire. Other layers sweep each group every sweepEvery ticks.
func (t *Tracker) sweep() {
	var expired map[string][]channellayer.Member
	if sw, ok := t.layer.(channellayer.PresenceSweeper); ok {
		expired = t.sweepDue(sw)
	} else {
		ctx, cancel := t.callCtx()
		expired = t.sweepTurns(ctx)
		cancel()
	}
	if len(expired) == 0 {
		return
	}
	bodies := make(map[string]signalBody, len(expired))
	emptied := make(map[string]map[string]bool)
	t.mu.Lock()
	for name, ms := range expired {
		gone := make([]signalEntry, 0, len(ms))
		died := false // an entry whose process stopped refreshing it, not a grace period's
		for _, m := range ms {
			if o, ok := setOp(m.Key, m.Info); ok {
				gone = append(gone, signalEntry{ID: m.Key, Key: o.key})
				died = died || !o.grace
			}
		}
		if len(gone) > 0 {
			bodies[name] = signalBody{Gone: gone}
		}
		if died {
			if keys := t.emptiedKeys(name, gone); len(keys) > 0 {
				emptied[name] = keys
			}
		}
	}
	t.mu.Unlock()
	returned := t.addReturned(bodies, emptied)
	t.signalAll(bodies)
	t.confirmReturned(returned)
}

// emptiedKeys returns the keys of gone (entries a sweep removed from
// group) that are left without an entry that the other trackers know of
// in this tracker's view of the group. This tracker's own entries do not
// count: its view has them at once, and their signals may still wait in
// its outbox. Under t.mu.
func (t *Tracker) emptiedKeys(group string, gone []signalEntry) map[string]bool {
	g := t.groups[group]
	if g == nil || !g.known {
		return nil
	}
	ids := make(map[uint64]bool, len(gone)+len(g.entries)) // not counted: gone, or local
	for _, e := range gone {
		ids[idHash(e.ID)] = true
	}
	for id := range g.entries {
		ids[idHash(id)] = true
	}
	var keys map[string]bool
	for _, e := range gone {
		i, j := g.live.span(e.Key)
		left := false
		for _, le := range g.live.es[i:j] {
			left = left || !ids[le.id]
		}
		if !left {
			if keys == nil {
				keys = make(map[string]bool)
			}
			keys[e.Key] = true
		}
	}
	return keys
}

// addReturned adds to the gone signals of a sweep the live entries of the
// keys it would leave without one (emptied: by group), read from the
// layer after the sweep: a person whose process died and who came back on
// another before the sweep is then no leave, even where the signal of the
// new entry has not arrived yet. A node that dies leaves thousands of
// people to come back at once; the signals of their new entries wait in
// line on their nodes, and a sweep's signal that overtook them announced
// them as gone (and back again seconds later).
//
// Only keys this view would empty are read for: a key's other entries
// that this tracker knows were signalled before the sweep's signal, on
// the same channel, so every tracker has them. Only sweeps of a dead
// process's entries read: a grace period's end is the usual leave, one
// per lost connection, and a read for each would cost a group read per
// disconnect, nor are entries in a grace period added (they are leaving).
// Where a read fails, the signal goes as it is. An entry read here may
// leave before this signal goes out, and its own gone signal go before
// it: confirmReturned mends that. It returns the entries it added, by
// group.
func (t *Tracker) addReturned(bodies map[string]signalBody, emptied map[string]map[string]bool) map[string][]signalEntry {
	added := make(map[string][]signalEntry) // ID and key, as a gone signal names them
	// Where a read failed, the signal goes as it is.
	all, _ := t.listGroups(slices.Collect(maps.Keys(emptied)), sweepChunk, sweepParallel)
	for name, ms := range all {
		b := bodies[name]
		for _, m := range ms {
			if o, ok := setOp(m.Key, m.Info); ok && emptied[name][o.key] && !o.grace {
				b.Set = append(b.Set, signalEntry{ID: m.Key, Info: m.Info})
				added[name] = append(added[name], signalEntry{ID: m.Key, Key: o.key})
			}
		}
		bodies[name] = b
	}
	return added
}

// confirmReturned reads again, after the sweep's signal went out, the
// groups whose signal carried returned entries (see addReturned), and
// signals gone those that have left meanwhile: their own gone signal may
// have gone out between the read and the sweep's signal, and would
// otherwise leave them listed by the others until a full read.
func (t *Tracker) confirmReturned(returned map[string][]signalEntry) {
	if len(returned) == 0 {
		return
	}
	bodies := make(map[string]signalBody)
	// A group not read here is mended by its next full read.
	all, _ := t.listGroups(slices.Collect(maps.Keys(returned)), sweepChunk, sweepParallel)
	for name, ms := range all {
		live := make(map[string]bool, len(ms))
		for _, m := range ms {
			live[m.Key] = true
		}
		var gone []signalEntry
		for _, e := range returned[name] {
			if !live[e.ID] {
				gone = append(gone, signalEntry{ID: e.ID, Key: e.Key})
			}
		}
		if len(gone) > 0 {
			bodies[name] = signalBody{Gone: gone}
		}
	}
	t.signalAll(bodies)
}

// listGroups reads the entries of groups: one ListAll per chunk of size
// names where the layer is a channellayer.PresenceLister, else one List
// per group, parallel chunks side by side. A group whose read failed is
// missing from the answer, and err is one of the failures.
func (t *Tracker) listGroups(names []string, size, parallel int) (out map[string][]channellayer.Member, err error) {
	out = make(map[string][]channellayer.Member, len(names))
	var mu sync.Mutex
	inChunks(names, size, parallel, func(chunk []string) {
		if l, ok := t.layer.(channellayer.PresenceLister); ok {
			ctx, cancel := t.callCtx()
			all, lerr := l.ListAll(ctx, chunk)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if lerr != nil {
				err = fmt.Errorf("presence: listing %d groups: %w", len(chunk), lerr)
				return
			}
			for _, name := range chunk {
				out[name] = all[name] // absent: no entries
			}
			return
		}
		for _, name := range chunk {
			ctx, cancel := t.callCtx()
			ms, lerr := t.p.List(ctx, name)
			cancel()
			mu.Lock()
			if lerr != nil {
				err = fmt.Errorf("presence: listing %q: %w", name, lerr)
			} else {
				out[name] = ms
			}
			mu.Unlock()
		}
	})
	return out, err
}

// sweepDue sweeps the groups whose sweepAt has come (sweepChunk per
// call) and sets when each is next due.
func (t *Tracker) sweepDue(sw channellayer.PresenceSweeper) map[string][]channellayer.Member {
	now := time.Now()
	type due struct {
		groupRef
		at time.Time // its sweepAt when taken
	}
	var dues []due
	t.mu.Lock()
	for name, g := range t.groups {
		if !g.sweepAt.After(now) {
			dues = append(dues, due{groupRef{name: name, g: g}, g.sweepAt})
		}
	}
	t.mu.Unlock()
	if len(dues) == 0 {
		return nil
	}
	names := make([]string, len(dues))
	for i, d := range dues {
		names[i] = d.name
	}
	swept := make(map[string]channellayer.Swept, len(names))
	failed := make(map[string]bool)
	var mu sync.Mutex
	var err error
	inChunks(names, sweepChunk, sweepParallel, func(chunk []string) {
		ctx, cancel := t.callCtx()
		defer cancel()
		s, cerr := sw.SweepAll(ctx, chunk)
		mu.Lock()
		defer mu.Unlock()
		if cerr != nil {
			err = cerr
			for _, name := range chunk {
				failed[name] = true
			}
			return
		}
		for name, v := range s {
			swept[name] = v
		}
	})
	if err != nil {
		t.log.Warn("presence: sweeping expired entries failed; will retry", "groups", len(failed), "err", err)
	}
	expired := make(map[string][]channellayer.Member)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range dues {
		if t.groups[d.name] != d.g { // gone, and maybe back, meanwhile
			continue
		}
		next := now.Add(t.opts.TTL)
		if failed[d.name] {
			next = now.Add(time.Duration(t.sweepEvery()) * t.opts.Interval)
		} else if s := swept[d.name]; !s.Next.IsZero() && s.Next.Before(next) {
			next = s.Next
		}
		if d.g.sweepAt != d.at && d.g.sweepAt.Before(next) {
			next = d.g.sweepAt // a signal asked for it sooner meanwhile
		}
		d.g.sweepAt = next
		if ms := swept[d.name].Expired; len(ms) > 0 {
			expired[d.name] = ms
		}
	}
	return expired
}

// sweepChunk bounds the groups one SweepAll call takes, and sweepParallel
// how many such calls a sweep makes at a time, each with its own timeout:
// on a loaded layer a call that times out fails its own groups only, and
// those are swept again a few ticks later, while the others' expired
// entries go now. A node's death makes every group due at about the same
// time, and one call for all of them failed as a whole, again and again,
// while the machine was busiest.
const (
	sweepChunk    = 100
	sweepParallel = 4
)

// inChunks calls f with items in chunks of at most size, parallel chunks
// at a time, and returns when every call has returned.
func inChunks[T any](items []T, size, parallel int, f func([]T)) {
	var wg sync.WaitGroup
	turns := make(chan struct{}, parallel)
	for start := 0; start < len(items); start += size {
		chunk := items[start:min(len(items), start+size)]
		turns <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(chunk)
			<-turns
		}()
	}
	wg.Wait()
}

// sweepTurns sweeps the groups whose turn it is (sweepEvery), where the
// layer does not tell when entries expire.
func (t *Tracker) sweepTurns(ctx context.Context) map[string][]channellayer.Member {
	every := t.sweepEvery()
	t.sweepTick++
	t.mu.Lock()
	names := make([]string, 0, len(t.groups)/int(every)+1)
	for name := range t.groups {
		if t.sweepsAt(name, t.sweepTick, every) {
			names = append(names, name)
		}
	}
	t.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	expired := make(map[string][]channellayer.Member)
	if r, ok := t.layer.(channellayer.PresenceRefresher); ok { // one round trip
		var err error
		if expired, err = r.ExpireAll(ctx, names); err != nil {
			t.log.Warn("presence: sweeping expired entries failed; will retry", "err", err)
			return nil
		}
	} else {
		for _, name := range names {
			if ms, err := t.p.Expire(ctx, name); err == nil && len(ms) > 0 {
				expired[name] = ms
			}
		}
	}
	return expired
}

// refreshChunk bounds the entries one refresh writes in one call: a
// process with many entries writes them in several calls, each with its own
// timeout, so that one slow call fails only its own chunk.
const refreshChunk = 1000

// refreshParallel is how many chunks of a refresh are written at a time:
// on a busy process each call waits its turn for a connection and the CPU,
// and a refresh that waits for its chunks one after the other may come
// too late for its entries' TTL.
const refreshParallel = 4

// entryRef names a local entry: its group and its ID.
type entryRef struct{ group, id string }

// refresh tracks every local entry again before its TTL runs out: in one
// call per refreshChunk entries where the layer can
// (channellayer.PresenceRefresher), else one call per entry. It reports
// whether every entry was written; a chunk that failed does not keep the
// others from being written.
func (t *Tracker) refresh() bool { return len(t.refreshRefs(nil)) == 0 }

// refreshRefs is refresh for refs only (every local entry if nil), and
// returns those of a chunk that failed: only they are tried again at the
// next tick, so that an overloaded layer is not asked for every chunk again
// each second.
func (t *Tracker) refreshRefs(refs []entryRef) (failed []entryRef) {
	if refs == nil {
		t.mu.Lock()
		for name, g := range t.groups {
			for id := range g.entries {
				refs = append(refs, entryRef{name, id})
			}
		}
		t.mu.Unlock()
	}
	var mu sync.Mutex
	inChunks(refs, refreshChunk, t.parallel, func(chunk []entryRef) {
		select {
		case <-t.stop: // closing: the entries are left to expire
		default:
			if t.refreshSome(chunk) {
				return
			}
		}
		mu.Lock()
		failed = append(failed, chunk...)
		mu.Unlock()
	})
	return failed
}

// rewriteLost writes back the entries of this process that a sweep
// removed while they are still tracked here, and tells every tracker of
// their groups that they are there. One that leaves after it was written
// back may be announced after its leave: it is then announced gone again.
func (t *Tracker) rewriteLost() {
	t.mu.Lock()
	refs := t.lost
	t.lost = nil
	t.mu.Unlock()
	if len(refs) == 0 {
		return
	}
	t.refreshMu.RLock()
	written, _, err := t.writeBack(refs)
	t.refreshMu.RUnlock()
	if err != nil {
		t.log.Warn("presence: writing back entries a sweep removed failed; will retry", "entries", len(refs), "err", err)
		t.mu.Lock()
		t.lost = append(t.lost, refs...)
		t.mu.Unlock()
		return
	}
	n := t.announce(written)
	t.log.Warn("presence: entries of this process expired before their refresh; written back (is the layer overloaded?)", "entries", n)
}

// announce tells every tracker of their groups that the entries written
// are there (and their infos), and returns how many it named. One that
// left meanwhile may be announced after its leave: it is then announced
// gone again.
func (t *Tracker) announce(written map[string][]channellayer.Member) int {
	if len(written) == 0 {
		return 0
	}
	n := 0
	bodies := make(map[string]signalBody, len(written))
	for name, members := range written {
		set := make([]signalEntry, len(members))
		for i, m := range members {
			set[i] = signalEntry{ID: m.Key, Info: m.Info}
		}
		n += len(set)
		bodies[name] = signalBody{Set: set}
	}
	t.signalAll(bodies)
	t.mu.Lock()
	gone := make(map[string][]signalEntry)
	for name, members := range written {
		g := t.groups[name]
		for _, m := range members {
			if g == nil || g.entries[m.Key] == nil {
				if o, ok := setOp(m.Key, m.Info); ok {
					gone[name] = append(gone[name], signalEntry{ID: m.Key, Key: o.key})
				}
			}
		}
	}
	t.mu.Unlock()
	bodies = make(map[string]signalBody, len(gone))
	for name, g := range gone {
		bodies[name] = signalBody{Gone: g}
	}
	t.signalAll(bodies)
	return n
}

// writeBack writes those of refs still tracked here with their infos now,
// and returns them by group; the caller read-locks refreshMu. late are
// those of them that may have expired before this write: their last write
// that worked began more than a TTL before this one ended. Other trackers
// may have read the group without them meanwhile (a full read leaves out
// expired entries) without any sweep to tell this process, so the caller
// announces them.
func (t *Tracker) writeBack(refs []entryRef) (written, late map[string][]channellayer.Member, err error) {
	type wrote struct {
		group string
		e     *entry
	}
	mine := make([]wrote, 0, len(refs))
	written = make(map[string][]channellayer.Member)
	// One array for every group's entries: refs come group by group (see
	// refreshDue), so each group's run is one slice of it.
	members := make([]channellayer.Member, 0, len(refs))
	t.mu.Lock()
	from := 0 // where the current group's run begins in members
	for i, r := range refs {
		if g := t.groups[r.group]; g != nil {
			if e := g.entries[r.id]; e != nil {
				members = append(members, channellayer.Member{Key: e.id, Info: e.info})
				mine = append(mine, wrote{r.group, e})
			}
		}
		if i+1 < len(refs) && refs[i+1].group == r.group {
			continue
		}
		switch run := members[from:len(members):len(members)]; {
		case len(run) == 0:
		case written[r.group] == nil:
			written[r.group] = run
		default: // a group in two runs (a retry's refs): a copy
			written[r.group] = append(written[r.group], run...)
		}
		from = len(members)
	}
	t.mu.Unlock()
	if len(written) == 0 {
		return written, nil, nil
	}
	start := time.Now()
	if err := t.write(written); err != nil {
		return nil, nil, err
	}
	end := time.Now().UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range mine {
		if end-w.e.written > int64(t.opts.TTL) {
			if late == nil {
				late = make(map[string][]channellayer.Member)
			}
			late[w.group] = append(late[w.group], channellayer.Member{Key: w.e.id, Info: w.e.info})
		}
		w.e.written = max(w.e.written, start.UnixNano())
	}
	return written, late, nil
}

// write writes entries (group → entries) to the layer with the TTL.
func (t *Tracker) write(entries map[string][]channellayer.Member) error {
	ctx, cancel := t.callCtx()
	defer cancel()
	if r, ok := t.layer.(channellayer.PresenceRefresher); ok {
		return r.TrackAll(ctx, entries, t.opts.TTL)
	}
	for name, es := range entries {
		for _, e := range es {
			if err := t.p.Track(ctx, name, e.Key, e.Info, t.opts.TTL); err != nil {
				return err
			}
		}
	}
	return nil
}

// refreshSome writes back those of refs still tracked here, with their
// infos now, and announces those that may have expired before (see
// writeBack). It holds refreshMu for its one chunk's write only: a Leave
// waits at most for one chunk's write, and an entry that left before it is
// not written back.
func (t *Tracker) refreshSome(refs []entryRef) bool {
	t.refreshMu.RLock()
	_, late, err := t.writeBack(refs)
	t.refreshMu.RUnlock()
	if err != nil {
		t.log.Warn("presence: refreshing entries failed; trying again at the next tick", "entries", len(refs), "err", err)
		return false
	}
	if n := t.announce(late); n > 0 {
		t.log.Warn("presence: entries of this process were refreshed after they expired; announced again (is the layer overloaded?)", "entries", n)
	}
	return true
}
