package presence

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Options configures a Tracker. The zero value is ready to use.
type Options struct {
	// TTL is how long the entries of a process that died without a
	// goodbye outlive it. Entries are refreshed every TTL/3. Defaults to
	// 30 s.
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

	// refreshMu orders a refresh's write of a chunk of the entries (read
	// under it) before the last word of an entry that leaves meanwhile: a
	// refresh must not write back an entry that has just left. It is held
	// for one chunk at a time, so a Leave waits for one chunk at most.
	refreshMu sync.Mutex

	wake      chan struct{}
	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
}

type group struct {
	entries   map[string]*entry // by ID
	last      state             // the state the last diff left, nil before the first
	dirty     bool
	lastFlush time.Time
	// came: keys tracked since the last diff (from the change signals),
	// with a meta: a key that came and went between two diffs is in
	// neither state, yet its join and leave both happened.
	came map[string]json.RawMessage
}

type entry struct {
	id, key string
	info    []byte // what the layer stores (see info)
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

// signalBody is what a change signal says of a join (empty otherwise).
type signalBody struct {
	Key  string          `json:"k,omitempty"`
	Meta json.RawMessage `json:"m,omitempty"`
}

// noteCame remembers a key tracked since the group's last diff.
func (t *Tracker) noteCame(groupName, key string, meta json.RawMessage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[groupName]
	if g == nil || key == "" {
		return
	}
	if g.came == nil {
		g.came = make(map[string]json.RawMessage)
	}
	if meta == nil {
		meta = json.RawMessage("null")
	}
	g.came[key] = meta
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
	ch, err := layer.NewChannel(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence: creating the tracker's channel: %w", err)
	}
	t := &Tracker{
		layer: layer, p: p, opts: opts, log: opts.Logger, channel: ch,
		groups: make(map[string]*group),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	t.done.Add(2)
	go t.receive()
	go t.run()
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
	if err := t.layer.GroupAdd(ctx, signalPrefix+groupName, t.channel); err != nil {
		return fmt.Errorf("presence: joining the signals of %q: %w", groupName, err)
	}
	t.mu.Lock()
	g := t.groups[groupName]
	first := g == nil
	if first {
		g = &group{entries: make(map[string]*entry)}
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
	b, _ := json.Marshal(info{Format: infoFormat, Key: key, Meta: m, Since: since})
	e = &entry{id: id, key: key, info: b}
	g.entries[id] = e
	t.mu.Unlock()

	if err := t.p.Track(ctx, groupName, id, b, t.opts.TTL); err != nil {
		t.forget(groupName, id)
		return fmt.Errorf("presence: tracking %q in %q: %w", key, groupName, err)
	}
	if first {
		// Diffs of a group new here start from its state now: its first
		// entry learns the state from List, and changes from diffs.
		if s, err := t.state(ctx, groupName); err == nil {
			t.mu.Lock()
			if g := t.groups[groupName]; g != nil && g.last == nil {
				g.last = s
			}
			t.mu.Unlock()
		}
	}
	t.signal(ctx, groupName, &signalBody{Key: key, Meta: m})
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
	var err error
	switch {
	case grace > 0 && !final:
		var in info
		_ = json.Unmarshal(e.info, &in)
		in.Grace = true
		in.Format = infoFormat
		b, _ := json.Marshal(in)
		err = t.p.Track(ctx, groupName, id, b, grace)
	default:
		err = t.p.Untrack(ctx, groupName, id)
		if err == nil && final {
			err = t.untrackWaiting(ctx, groupName, e.key)
		}
	}
	t.changed(ctx, groupName)
	if err != nil {
		return fmt.Errorf("presence: leaving %q: %w", groupName, err)
	}
	return nil
}

// untrackWaiting removes the entries of key that wait out a grace period,
// unless key has a live entry.
func (t *Tracker) untrackWaiting(ctx context.Context, groupName, key string) error {
	members, err := t.p.List(ctx, groupName)
	if err != nil {
		return err
	}
	var waiting []string
	for _, m := range members {
		var in info
		if json.Unmarshal(m.Info, &in) != nil || in.Key != key {
			continue
		}
		if !in.Grace {
			return nil // another tab is still here
		}
		waiting = append(waiting, m.Key)
	}
	for _, id := range waiting {
		if err := t.p.Untrack(ctx, groupName, id); err != nil {
			return err
		}
	}
	return nil
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

// Cached returns the group's presence as this tracker last read it, with
// no call to the layer: the state its last diff of the group went up to
// (or, before the first, the state read when the group's first local entry
// was tracked), in the form List returns. ok is false when the tracker has
// no such state: no entry of the group is tracked here, or none was read.
//
// It lags the layer by about one Interval: a change is in it once the diff
// it causes has been made, which happens before that diff reaches the
// group's local entries. Read it when such a diff arrives (or after any
// change of the group tracked here and then diffed), and call List when
// ok is false. The metas are shared: do not modify them.
func (t *Tracker) Cached(groupName string) (list []Presence, ok bool) {
	t.mu.Lock()
	var s state
	if g := t.groups[groupName]; g != nil {
		s = g.last
	}
	t.mu.Unlock()
	if s == nil {
		return nil, false
	}
	return s.list(), true
}

// state reads the group's state from the layer.
func (t *Tracker) state(ctx context.Context, groupName string) (state, error) {
	members, err := t.p.List(ctx, groupName)
	if err != nil {
		return nil, fmt.Errorf("presence: listing %q: %w", groupName, err)
	}
	return stateOf(members), nil
}

// stateOf is the state of a group whose layer entries are members: its
// keys, each with the metas of its entries, oldest first. Entries that are
// not a tracker's are left out.
func stateOf(members []channellayer.Member) state {
	type meta struct {
		since int64
		id    string
		m     json.RawMessage
	}
	byKey := make(map[string][]meta)
	for _, mb := range members {
		var in info
		if json.Unmarshal(mb.Info, &in) != nil || in.Key == "" {
			continue // not an entry of a tracker
		}
		m := in.Meta
		if m == nil {
			m = json.RawMessage("null")
		}
		byKey[in.Key] = append(byKey[in.Key], meta{in.Since, mb.Key, m})
	}
	s := make(state, len(byKey))
	for k, ms := range byKey {
		slices.SortFunc(ms, func(a, b meta) int {
			return cmp.Or(cmp.Compare(a.since, b.since), cmp.Compare(a.id, b.id))
		})
		out := make([]json.RawMessage, len(ms))
		for i, m := range ms {
			out[i] = m.m
		}
		s[k] = out
	}
	return s
}

// changed tells every tracker of the group (this one too) that its
// presence changed.
func (t *Tracker) changed(ctx context.Context, groupName string) {
	t.signal(ctx, groupName, nil)
}

// signal tells every tracker of the group (this one too) that its presence
// changed; joined, if set, is the entry just tracked.
func (t *Tracker) signal(ctx context.Context, groupName string, joined *signalBody) {
	t.markDirty(groupName)
	if joined != nil {
		t.noteCame(groupName, joined.Key, joined.Meta)
	}
	m, _ := channellayer.NewMessage(signalType, joined)
	if err := t.layer.GroupSend(context.WithoutCancel(ctx), signalPrefix+groupName, m); err != nil {
		t.log.Warn("presence: signalling a change failed; other processes see it at their next sweep", "group", groupName, "err", err)
	}
}

func (t *Tracker) markDirty(groupName string) {
	t.mu.Lock()
	if g := t.groups[groupName]; g != nil {
		g.dirty = true
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
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
				t.markAllDirty()
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
			name := m.Group[len(signalPrefix):]
			var b signalBody
			if json.Unmarshal(m.Body, &b) == nil && b.Key != "" {
				t.noteCame(name, b.Key, b.Meta)
			}
			t.markDirty(name)
		}
	}
}

func (t *Tracker) markAllDirty() {
	t.mu.Lock()
	for _, g := range t.groups {
		g.dirty = true
	}
	t.mu.Unlock()
}

// run flushes diffs, sweeps expired entries and refreshes the live ones.
func (t *Tracker) run() {
	defer t.done.Done()
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	refreshEvery := t.opts.TTL / 3
	lastRefresh := time.Now()
	// refreshFailed: the last refresh failed, so it is tried again at the
	// next tick, and entries may have expired and been swept meanwhile.
	refreshFailed := false
	// A refresh runs on a goroutine of its own, one at a time: its chunks
	// may take a while on a loaded layer, and diffs and sweeps go on
	// meanwhile. refreshed reports how it went.
	refreshing := false
	refreshed := make(chan bool, 1)
	for {
		select {
		case <-t.stop:
			return
		case <-t.wake:
			t.flush(false)
		case ok := <-refreshed:
			refreshing = false
			failedBefore := refreshFailed
			refreshFailed = !ok
			if failedBefore && ok {
				t.resignal()
			}
		case <-tick.C:
			t.sweep()
			t.flush(true)
			if !refreshing && (time.Since(lastRefresh) >= refreshEvery || refreshFailed) {
				lastRefresh = time.Now()
				refreshing = true
				t.done.Add(1)
				go func() {
					defer t.done.Done()
					refreshed <- t.refresh()
				}()
			}
		}
	}
}

func (t *Tracker) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
}

// flushChunk bounds the groups whose states one flush reads in one call.
const flushChunk = 500

// flush sends each dirty group's diff to its local entries: at most one per
// group per Interval (a group flushed less than Interval ago waits for the
// tick, when late says so). The states of the due groups are read in one
// call per flushChunk groups where the layer can.
func (t *Tracker) flush(late bool) {
	now := time.Now()
	t.mu.Lock()
	var due []string
	for name, g := range t.groups {
		if g.dirty && (late || now.Sub(g.lastFlush) >= t.opts.Interval) {
			g.dirty = false
			g.lastFlush = now
			due = append(due, name)
		}
	}
	t.mu.Unlock()
	for start := 0; start < len(due); start += flushChunk {
		names := due[start:min(len(due), start+flushChunk)]
		var failed []groupRead
		for _, r := range t.readStates(names) {
			if r.err != nil {
				failed = append(failed, r)
				continue
			}
			t.deliver(r)
		}
		t.retry(failed)
	}
}

// retry makes the groups that could not be read due again, with the keys
// that came before, for the next flush; it logs one warning for them all.
func (t *Tracker) retry(failed []groupRead) {
	if len(failed) == 0 {
		return
	}
	t.log.Warn("presence: listing groups failed; will retry",
		"groups", len(failed), "group", failed[0].name, "err", failed[0].err)
	for _, r := range failed {
		for k, meta := range r.came {
			t.noteCame(r.name, k, meta)
		}
		t.markDirty(r.name)
	}
}

// groupRead is what a flush read of one group: its state now, or the
// error that kept it from being read, and the keys that came (see
// group.came) before it was read.
type groupRead struct {
	name  string
	came  map[string]json.RawMessage
	state state
	err   error
}

// readStates takes the came sets of names, then reads their states: with
// one ListAll where the layer is a channellayer.PresenceLister, else with
// one List per group.
func (t *Tracker) readStates(names []string) []groupRead {
	// The keys that came before the list is read: a key whose signal
	// arrives while it is read may be missing from it, and waits for the
	// next diff.
	reads := make([]groupRead, len(names))
	t.mu.Lock()
	for i, name := range names {
		reads[i].name = name
		if g := t.groups[name]; g != nil {
			reads[i].came, g.came = g.came, nil
		}
	}
	t.mu.Unlock()
	if l, ok := t.layer.(channellayer.PresenceLister); ok { // one round trip
		ctx, cancel := t.callCtx()
		defer cancel()
		all, err := l.ListAll(ctx, names)
		if err != nil {
			err = fmt.Errorf("presence: listing %d groups: %w", len(names), err)
		}
		for i := range reads {
			reads[i].err = err
			if err == nil {
				reads[i].state = stateOf(all[reads[i].name]) // absent: no entries
			}
		}
		return reads
	}
	for i := range reads {
		ctx, cancel := t.callCtx()
		reads[i].state, reads[i].err = t.state(ctx, reads[i].name)
		cancel()
	}
	return reads
}

// deliver sends the diff from the group's last state to r.state to the
// group's local entries, and keeps r.state as its last.
func (t *Tracker) deliver(r groupRead) {
	ctx, cancel := t.callCtx()
	defer cancel()
	name, now := r.name, r.state
	t.mu.Lock()
	g := t.groups[name]
	if g == nil {
		t.mu.Unlock()
		return
	}
	old := g.last
	g.last = now
	ids := make([]string, 0, len(g.entries))
	for id := range g.entries {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	d := diff(name, old, now)
	for k, meta := range r.came {
		_, before := old[k]
		_, after := now[k]
		if old != nil && !before && !after { // came and went between two diffs
			d.Joins[k] = []json.RawMessage{meta}
			d.Leaves[k] = []json.RawMessage{meta}
		}
	}
	if d.Empty() {
		return
	}
	m, err := channellayer.NewMessage(DiffType, d)
	if err != nil {
		t.log.Error("presence: encoding a diff failed", "group", name, "err", err)
		return
	}
	for _, id := range ids {
		if err := t.layer.Send(ctx, id, m); err != nil && !errors.Is(err, channellayer.ErrNoChannel) {
			t.log.Debug("presence: delivering a diff failed", "group", name, "channel", id, "err", err)
		}
	}
}

// sweep removes the expired entries of the groups tracked here; a group
// that lost some changed, for every tracker of it.
func (t *Tracker) sweep() {
	t.mu.Lock()
	names := make([]string, 0, len(t.groups))
	for name := range t.groups {
		names = append(names, name)
	}
	t.mu.Unlock()
	if len(names) == 0 {
		return
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	if r, ok := t.layer.(channellayer.PresenceRefresher); ok { // one round trip
		expired, err := r.ExpireAll(ctx, names)
		if err != nil {
			t.log.Warn("presence: sweeping expired entries failed; will retry", "err", err)
			return
		}
		for name := range expired {
			t.changed(ctx, name)
		}
		return
	}
	for _, name := range names {
		expired, err := t.p.Expire(ctx, name)
		if err == nil && len(expired) > 0 {
			t.changed(ctx, name)
		}
	}
}

// resignal tells every tracker of each group tracked here that it changed.
// After refreshes that failed, entries of this process may have expired,
// been swept (and announced as leaves) and then been written back by the
// refresh that succeeded: without a signal, no tracker would read the
// group again, and its members would go on seeing those people gone.
func (t *Tracker) resignal() {
	t.mu.Lock()
	names := make([]string, 0, len(t.groups))
	for name := range t.groups {
		names = append(names, name)
	}
	t.mu.Unlock()
	ctx, cancel := t.callCtx()
	defer cancel()
	for _, name := range names {
		t.changed(ctx, name)
	}
}

// refreshChunk bounds the entries one refresh writes in one call: a
// process with many entries writes them in several calls, each with its own
// timeout, so that one slow call fails only its own chunk.
const refreshChunk = 1000

// entryRef names a local entry: its group and its ID.
type entryRef struct{ group, id string }

// refresh tracks every local entry again before its TTL runs out: in one
// call per refreshChunk entries where the layer can
// (channellayer.PresenceRefresher), else one call per entry. It reports
// whether every entry was written; a chunk that failed does not keep the
// others from being written.
func (t *Tracker) refresh() bool {
	t.mu.Lock()
	var refs []entryRef
	for name, g := range t.groups {
		for id := range g.entries {
			refs = append(refs, entryRef{name, id})
		}
	}
	t.mu.Unlock()
	ok := true
	for start := 0; start < len(refs); start += refreshChunk {
		select {
		case <-t.stop: // closing: the entries are left to expire
			return false
		default:
		}
		if !t.refreshSome(refs[start:min(len(refs), start+refreshChunk)]) {
			ok = false
		}
	}
	return ok
}

// refreshSome writes back those of refs still tracked here, with their
// infos now. It holds refreshMu for its one chunk only: a Leave waits at
// most for one chunk's write, and an entry that left before it is not
// written back.
func (t *Tracker) refreshSome(refs []entryRef) bool {
	t.refreshMu.Lock()
	defer t.refreshMu.Unlock()
	all := make(map[string][]channellayer.Member)
	t.mu.Lock()
	for _, r := range refs {
		if g := t.groups[r.group]; g != nil {
			if e := g.entries[r.id]; e != nil {
				all[r.group] = append(all[r.group], channellayer.Member{Key: e.id, Info: e.info})
			}
		}
	}
	t.mu.Unlock()
	if len(all) == 0 {
		return true
	}
	ctx, cancel := t.callCtx()
	defer cancel()
	if r, ok := t.layer.(channellayer.PresenceRefresher); ok {
		if err := r.TrackAll(ctx, all, t.opts.TTL); err != nil {
			t.log.Warn("presence: refreshing entries failed; trying again at the next tick", "entries", len(refs), "err", err)
			return false
		}
		return true
	}
	ok := true
	for name, entries := range all {
		for _, e := range entries {
			if err := t.p.Track(ctx, name, e.Key, e.Info, t.opts.TTL); err != nil {
				t.log.Warn("presence: refreshing an entry failed; trying again at the next tick", "group", name, "err", err)
				ok = false
			}
		}
	}
	return ok
}
