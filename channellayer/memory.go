package channellayer

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// MemoryOptions configures a Memory layer. The zero value is ready to use.
type MemoryOptions struct {
	// Capacity is how many messages a channel holds. Defaults to 100.
	Capacity int
	// Expiry is how long a message waits in a channel. Defaults to 60 s.
	Expiry time.Duration
	// HistorySize is how many messages a group's history keeps. Defaults to 100.
	HistorySize int
	// GroupTTL is how long a group's history is kept after its last
	// recorded message; then the group's history is forgotten. Defaults to
	// 0: kept for ever.
	GroupTTL time.Duration
}

var _ ExceptSender = (*Memory)(nil)

// Memory is the in-process layer: one process, no server. It implements
// Layer, History, Recorder, Presence, PresenceRefresher,
// PresenceLister and ExceptSender.
type Memory struct {
	local       *local
	historySize int
	groupTTL    time.Duration
	now         func() time.Time // the clock of GroupTTL; time.Now but in tests

	mu        sync.Mutex // guards the history map, presence and closed
	history   map[string]*memHistory
	lastSweep time.Time // when forgotten histories were last looked for
	floor     streamID  // the last ID of the histories forgotten: new IDs come after it
	presence  map[string]map[string]memEntry
	closed    bool

	dirMu sync.Mutex                     // guards dir
	dir   map[string]map[string]memCount // directory: index → name → entry
}

// groupHistory returns a group's history, made if create is set. With a
// GroupTTL it forgets, now and then, the histories idle for that long.
func (m *Memory) groupHistory(group string, create bool) *memHistory {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groupTTL > 0 && create {
		if now := m.now(); now.Sub(m.lastSweep) >= min(m.groupTTL, time.Minute) {
			m.lastSweep = now
			for g, h := range m.history {
				h.mu.Lock()
				if h.idle(now, m.groupTTL) {
					if m.floor.less(h.last) {
						m.floor = h.last
					}
					h.gone = true
					delete(m.history, g)
				}
				h.mu.Unlock()
			}
		}
	}
	h := m.history[group]
	if h == nil && create {
		h = &memHistory{last: m.floor}
		m.history[group] = h
	}
	return h
}

type memHistory struct {
	mu      sync.Mutex // per group: rooms do not wait for each other
	last    streamID
	msgs    []Message         // oldest first; the last historySize are kept (see kept)
	keys    map[string]string // record key → ID (see GroupSendRecordedOnce)
	written time.Time         // when the last message was recorded
	gone    bool              // forgotten (see groupHistory): a record must find the new one
}

// idle reports whether the history has had no message for ttl (h.mu held).
func (h *memHistory) idle(now time.Time, ttl time.Duration) bool {
	return ttl > 0 && now.Sub(h.written) >= ttl
}

// kept returns the messages the history still keeps, oldest first; none
// once the group has been idle for ttl (h.mu held).
func (m *Memory) kept(h *memHistory) []Message {
	if h.idle(m.now(), m.groupTTL) {
		return nil
	}
	return h.kept(m.historySize)
}

// kept returns the messages the history still keeps, oldest first.
func (h *memHistory) kept(size int) []Message {
	if len(h.msgs) > size {
		return h.msgs[len(h.msgs)-size:]
	}
	return h.msgs
}

type memEntry struct {
	info    []byte
	expires time.Time
}

var (
	_ Layer    = (*Memory)(nil)
	_ History  = (*Memory)(nil)
	_ Recorder = (*Memory)(nil)
	_ Presence = (*Memory)(nil)

	_ IdempotentRecorder = (*Memory)(nil)
	_ Pager              = (*Memory)(nil)
)

// NewMemory returns an in-process layer.
func NewMemory(opts MemoryOptions) (*Memory, error) {
	if opts.Capacity < 0 || opts.Expiry < 0 || opts.HistorySize < 0 || opts.GroupTTL < 0 {
		return nil, fmt.Errorf("%w: memory layer options must not be negative", ErrInvalid)
	}
	if opts.HistorySize == 0 {
		opts.HistorySize = DefaultHistorySize
	}
	return &Memory{
		local:       newLocal(opts.Capacity, opts.Expiry, ""),
		historySize: opts.HistorySize,
		groupTTL:    opts.GroupTTL,
		now:         time.Now,
		history:     make(map[string]*memHistory),
		presence:    make(map[string]map[string]memEntry),
	}, nil
}

func (m *Memory) NewChannel(ctx context.Context) (string, error) {
	return m.NewChannelCapacity(ctx, 0)
}

// NewChannelCapacity implements ChannelCapacity.
func (m *Memory) NewChannelCapacity(ctx context.Context, capacity int) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return m.local.newChannel(capacity)
}

func (m *Memory) Send(ctx context.Context, channel string, msg Message) error {
	if err := m.check(ctx, msg); err != nil {
		return err
	}
	return m.local.send(channel, msg)
}

func (m *Memory) Receive(ctx context.Context, channel string) (Message, error) {
	return m.local.receive(ctx, channel)
}

func (m *Memory) GroupAdd(ctx context.Context, group, channel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if group == "" {
		return fmt.Errorf("%w: empty group name", ErrInvalid)
	}
	_, err := m.local.groupAdd(group, channel)
	return err
}

func (m *Memory) GroupDiscard(ctx context.Context, group, channel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.local.groupDiscard(group, channel)
	return nil
}

func (m *Memory) GroupSend(ctx context.Context, group string, msg Message) error {
	if err := m.check(ctx, msg); err != nil {
		return err
	}
	m.local.deliver(group, msg)
	return nil
}

// GroupSendExcept implements ExceptSender.
func (m *Memory) GroupSendExcept(ctx context.Context, group string, msg Message, except string) error {
	if err := m.check(ctx, msg); err != nil {
		return err
	}
	m.local.deliverExcept(group, msg, except)
	return nil
}

func (m *Memory) DiscardChannel(ctx context.Context, channel string) error {
	m.local.discard(channel)
	return nil
}

func (m *Memory) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.local.close()
	return nil
}

func (m *Memory) check(ctx context.Context, msg Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if msg.Type == "" || len(msg.Body) == 0 {
		return fmt.Errorf("%w: message needs a type and a body (use NewMessage)", ErrInvalid)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return nil
}

// GroupSendRecordedAsync implements Recorder: the memory layer records at
// once, so done is called before it returns.
func (m *Memory) GroupSendRecordedAsync(group string, msg Message, done func(Message, error)) {
	done(m.GroupSendRecorded(context.Background(), group, msg))
}

// GroupSendRecorded implements History.
func (m *Memory) GroupSendRecorded(ctx context.Context, group string, msg Message) (Message, error) {
	if err := m.check(ctx, msg); err != nil {
		return Message{}, err
	}
	h := m.groupHistory(group, true)
	h.mu.Lock()  // held across delivery: IDs reach members in order
	for h.gone { // forgotten meanwhile
		h.mu.Unlock()
		h = m.groupHistory(group, true)
		h.mu.Lock()
	}
	defer h.mu.Unlock()
	return m.record(group, h, msg), nil
}

// record records msg in h and delivers it; h.mu is held.
func (m *Memory) record(group string, h *memHistory, msg Message) Message {
	if h.idle(m.now(), m.groupTTL) {
		clear(h.msgs) // idle for GroupTTL: forgotten, keys too
		h.msgs = h.msgs[:0]
		clear(h.keys)
	}
	h.written = m.now()
	ms := uint64(time.Now().UnixMilli())
	id := streamID{ms: ms}
	if ms <= h.last.ms {
		id = streamID{ms: h.last.ms, seq: h.last.seq + 1}
	}
	h.last = id
	msg.ID = id.String()
	msg.Body = withID(msg.Body, msg.ID)
	if len(h.msgs) >= 2*m.historySize {
		// Trim in bulk: the kept window moves to the front once every
		// historySize messages, not on every message.
		n := copy(h.msgs, h.msgs[len(h.msgs)-m.historySize:])
		clear(h.msgs[n:])
		h.msgs = h.msgs[:n]
	}
	h.msgs = append(h.msgs, msg)
	m.local.deliver(group, msg)
	return msg
}

// Recent implements History.
func (m *Memory) Recent(ctx context.Context, group string, n int) ([]Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h := m.groupHistory(group, false)
	if h == nil || n <= 0 {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	msgs := m.kept(h)
	if len(msgs) > n {
		msgs = msgs[len(msgs)-n:]
	}
	return append([]Message(nil), msgs...), nil
}

// Since implements History.
func (m *Memory) Since(ctx context.Context, group, id string) ([]Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !ValidID(id) {
		return nil, fmt.Errorf("history of %q since %q: %w", group, id, ErrUnknownID)
	}
	if h := m.groupHistory(group, false); h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		kept := m.kept(h)
		for i, msg := range kept {
			if msg.ID == id {
				return append([]Message(nil), kept[i+1:]...), nil
			}
		}
	}
	return nil, fmt.Errorf("history of %q since %q: %w", group, id, ErrUnknownID)
}

// Track implements Presence.
func (m *Memory) Track(ctx context.Context, group, key string, info []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if group == "" || key == "" || ttl <= 0 {
		return fmt.Errorf("%w: presence needs a group, a key and a positive TTL", ErrInvalid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	g := m.presence[group]
	if g == nil {
		g = make(map[string]memEntry)
		m.presence[group] = g
	}
	g[key] = memEntry{info: info, expires: time.Now().Add(ttl)} // kept as it is: see Presence.Track
	return nil
}

// Untrack implements Presence.
func (m *Memory) Untrack(ctx context.Context, group, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.presence[group]; g != nil {
		delete(g, key)
		if len(g) == 0 {
			delete(m.presence, group)
		}
	}
	return nil
}

// List implements Presence.
func (m *Memory) List(ctx context.Context, group string) ([]Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listLocked(group, now), nil
}

// listLocked returns the entries of group live at now, sorted by key (nil
// if none). m.mu must be held.
func (m *Memory) listLocked(group string, now time.Time) []Member {
	var out []Member
	for k, e := range m.presence[group] {
		if now.Before(e.expires) {
			out = append(out, Member{Key: k, Info: e.info})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Expire implements Presence.
func (m *Memory) Expire(ctx context.Context, group string) ([]Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	g := m.presence[group]
	for k, e := range g {
		if !now.Before(e.expires) {
			out = append(out, Member{Key: k, Info: e.info})
			delete(g, k)
		}
	}
	if g != nil && len(g) == 0 {
		delete(m.presence, group)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
