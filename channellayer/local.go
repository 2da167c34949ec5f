package channellayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatterpro/chatterpro/internal/slicepool"
)

// local is the in-process half every backend shares: the channels this
// process owns, each a bounded queue, and the local members of each group.
type local struct {
	prefix   string // "<process id>!", the start of every channel name owned here
	capacity int
	expiry   time.Duration
	seq      atomic.Uint64

	// Channels are sharded by name: every delivery looks its channel up,
	// and a join storm makes a channel per socket. Under one lock a maker
	// waiting for it held up every lookup behind it; on a starved node
	// each hand-over waits for a turn of the scheduler.
	chans [channelShards]channelShard

	// Groups are sharded by name, so a fan-out to a big group (which holds
	// its shard's read lock) never stops joins and leaves elsewhere.
	shards [groupShards]groupShard
}

const (
	channelShards = 64
	groupShards   = 64
)

type channelShard struct {
	mu       sync.RWMutex // guards channels and closed
	channels map[string]*channel
	closed   bool
}

// fnv is the FNV-1a hash of s, which picks a shard.
func fnv(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

func (l *local) chanShard(name string) *channelShard { return &l.chans[fnv(name)%channelShards] }

type groupShard struct {
	mu     sync.RWMutex
	groups map[string]*members
}

func (l *local) shard(group string) *groupShard { return &l.shards[fnv(group)%groupShards] }

type members struct {
	list  []*channel
	index map[*channel]int
}

// queued is a waiting message. A group's message is one copy shared by
// every channel it went to, never modified: a fan-out to 500 writes an
// entry of 16 bytes to each, not one of 80.
type queued struct {
	m  *Message
	at int64 // arrival, Unix nanoseconds
}

type channel struct {
	name     string
	capacity int
	expiry   int64 // nanoseconds

	gmu    sync.Mutex // guards groups and dead; taken before a shard's lock
	groups []string   // the groups the channel is in: few, a slice is smaller than a map
	dead   bool       // discarded: joins no group again

	mu       sync.Mutex
	q        []queued // q[head:] are waiting; grows as needed, up to capacity
	head     int
	overflow bool
	gone     bool
	notify   chan struct{} // capacity 1: "something changed"; made by the first Receive that waits
	onArrive func(int)     // see Notifier
}

func (ch *channel) len() int { return len(ch.q) - ch.head }

// newLocal returns the channels of a process; tag ends its process ID
// (see processFormat).
func newLocal(capacity int, expiry time.Duration, tag string) *local {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	if expiry <= 0 {
		expiry = DefaultExpiry
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	l := &local{
		prefix:   "p" + hex.EncodeToString(b[:]) + tag + "!",
		capacity: capacity,
		expiry:   expiry,
	}
	for i := range l.chans {
		l.chans[i].channels = make(map[string]*channel)
	}
	for i := range l.shards {
		l.shards[i].groups = make(map[string]*members)
	}
	return l
}

// owns reports whether a channel name belongs to this process.
func (l *local) owns(name string) bool { return strings.HasPrefix(name, l.prefix) }

// processOf returns the process part of a channel name.
func processOf(name string) (string, bool) {
	p, _, ok := strings.Cut(name, "!")
	return p, ok && p != ""
}

func (l *local) newChannel(capacity int) (string, error) {
	if capacity <= 0 {
		capacity = l.capacity
	}
	name := l.prefix + strconv.FormatUint(l.seq.Add(1), 36)
	s := l.chanShard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	s.channels[name] = &channel{
		name:     name,
		capacity: capacity,
		expiry:   int64(l.expiry),
	}
	return name, nil
}

func (l *local) lookup(name string) *channel {
	s := l.chanShard(name)
	s.mu.RLock()
	ch := s.channels[name]
	s.mu.RUnlock()
	return ch
}

// send queues m on a channel of this process.
func (l *local) send(name string, m Message) error {
	ch := l.lookup(name)
	if ch == nil {
		return l.noChannel("sending to", name)
	}
	if !ch.push(&m, time.Now().UnixNano(), false) {
		return fmt.Errorf("sending to %s: %w", name, ErrChannelFull)
	}
	return nil
}

// push appends m; a full channel refuses it, and a refused group message
// flags the channel as overflowed.
func (ch *channel) push(m *Message, now int64, group bool) bool {
	ch.mu.Lock()
	if ch.gone {
		ch.mu.Unlock()
		return true // discarded channel: nothing to deliver to
	}
	if ch.len() >= ch.capacity {
		ch.dropExpired(now)
	}
	accepted := ch.len() < ch.capacity
	if !accepted {
		if !group {
			ch.mu.Unlock()
			return false
		}
		ch.overflow = true
	} else {
		if ch.head > 0 && len(ch.q) == cap(ch.q) {
			// Slide the waiting entries to the front instead of growing.
			n := copy(ch.q, ch.q[ch.head:])
			clear(ch.q[n:])
			ch.q, ch.head = ch.q[:n], 0
		}
		ch.q = queueArrays.Append(ch.q, queued{m, now})
	}
	waiting := ch.len()
	if !accepted {
		waiting = 0 // an overflow: look now (see Notifier)
	}
	f, n := ch.onArrive, ch.notify
	ch.mu.Unlock()
	if f != nil {
		f(waiting)
	} else {
		wake(n)
	}
	return accepted
}

// queueArrays lend channels the arrays of their queues: a drained channel
// gives its array back, so an idle one keeps none, and a busy one takes
// one per burst without allocating. A channel whose capacity is above the
// largest size grows past it by append.
var queueArrays = slicepool.New[queued](8, 32, 128)

func (ch *channel) dropExpired(now int64) {
	for ch.len() > 0 && now-ch.q[ch.head].at > ch.expiry {
		ch.q[ch.head] = queued{}
		ch.head++
	}
	ch.compact()
}

// compact gives back the array of a drained queue (see queueArrays).
func (ch *channel) compact() {
	if ch.len() == 0 {
		ch.release()
	}
}

// release gives back the queue's array; the queue must be empty or done.
func (ch *channel) release() {
	queueArrays.Put(ch.q)
	ch.q, ch.head = nil, 0
}

// wake tells a waiting Receive that something changed; n is the
// channel's notify, read under its lock (nil: nobody ever waited).
func wake(n chan struct{}) {
	select {
	case n <- struct{}{}:
	default:
	}
}

// pop returns the next message that has not expired. Called with ch.mu held.
func (ch *channel) pop(name string) (Message, bool, error) {
	if ch.overflow {
		ch.overflow = false
		return Message{}, false, fmt.Errorf("receiving on %s: %w", name, ErrOverflow)
	}
	now := time.Now().UnixNano()
	for ch.len() > 0 {
		e := ch.q[ch.head]
		ch.q[ch.head] = queued{}
		ch.head++
		if now-e.at <= ch.expiry {
			ch.compact()
			return *e.m, true, nil
		}
	}
	ch.compact()
	return Message{}, false, nil
}

func (l *local) receive(ctx context.Context, name string) (Message, error) {
	ch := l.lookup(name)
	if ch == nil {
		return Message{}, l.noChannel("receiving on", name)
	}
	for {
		ch.mu.Lock()
		if ch.gone {
			ch.mu.Unlock()
			return Message{}, l.noChannel("receiving on", name)
		}
		m, ok, err := ch.pop(name)
		if ch.notify == nil && !ok && err == nil {
			ch.notify = make(chan struct{}, 1)
		}
		notify := ch.notify
		ch.mu.Unlock()
		if ok || err != nil {
			return m, err
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

// tryReceive is Receive without waiting (see Notifier).
func (l *local) tryReceive(name string) (Message, bool, error) {
	ch := l.lookup(name)
	if ch == nil {
		return Message{}, false, l.noChannel("receiving on", name)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.gone {
		return Message{}, false, l.noChannel("receiving on", name)
	}
	return ch.pop(name)
}

// tryReceiveAll is TryReceive for every waiting message (see Drainer).
func (l *local) tryReceiveAll(name string, buf []Message) ([]Message, error) {
	ch := l.lookup(name)
	if ch == nil {
		return buf, l.noChannel("receiving on", name)
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.gone {
		return buf, l.noChannel("receiving on", name)
	}
	if ch.overflow {
		ch.overflow = false
		return buf, fmt.Errorf("receiving on %s: %w", name, ErrOverflow)
	}
	if ch.len() == 0 {
		return buf, nil
	}
	now := time.Now().UnixNano()
	for i := ch.head; i < len(ch.q); i++ {
		if e := ch.q[i]; now-e.at <= ch.expiry {
			buf = append(buf, *e.m)
		}
	}
	ch.release()
	return buf, nil
}

// setNotify installs the arrival callback of a channel (see Notifier).
func (l *local) setNotify(name string, f func(int)) error {
	ch := l.lookup(name)
	if ch == nil {
		return l.noChannel("notifying on", name)
	}
	ch.mu.Lock()
	ch.onArrive = f
	pending := ch.len() > 0 || ch.overflow
	ch.mu.Unlock()
	if f != nil && pending {
		f(0)
	}
	return nil
}

// noChannel is the error for a channel that is not (or no longer) here:
// ErrClosed once the layer is closed, else ErrNoChannel.
func (l *local) noChannel(op, name string) error {
	s := l.chanShard(name)
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return fmt.Errorf("%s %s: %w", op, name, ErrClosed)
	}
	return fmt.Errorf("%s %s: %w", op, name, ErrNoChannel)
}

// groupAdd adds a local channel to a group and reports whether it is the
// group's first local member.
func (l *local) groupAdd(group, name string) (first bool, err error) {
	ch := l.lookup(name)
	if ch == nil {
		return false, l.noChannel("adding to group "+strconv.Quote(group), name)
	}
	ch.gmu.Lock()
	defer ch.gmu.Unlock()
	if ch.dead {
		return false, l.noChannel("adding to group "+strconv.Quote(group), name)
	}
	if slices.Contains(ch.groups, group) {
		return false, nil
	}
	s := l.shard(group)
	s.mu.Lock()
	g := s.groups[group]
	if g == nil {
		g = &members{index: make(map[*channel]int)}
		s.groups[group] = g
		first = true
	}
	g.index[ch] = len(g.list)
	g.list = append(g.list, ch)
	s.mu.Unlock()
	ch.groups = append(ch.groups, group)
	return first, nil
}

// groupDiscard removes a local channel from a group and reports whether the
// group has no local member left.
func (l *local) groupDiscard(group, name string) (last bool) {
	ch := l.lookup(name)
	if ch == nil {
		return false
	}
	ch.gmu.Lock()
	defer ch.gmu.Unlock()
	i := slices.Index(ch.groups, group)
	if i < 0 {
		return false
	}
	ch.groups = slices.Delete(ch.groups, i, i+1)
	return l.removeMember(group, ch)
}

// removeMember takes ch out of a group's members; called with ch.gmu held.
func (l *local) removeMember(group string, ch *channel) (last bool) {
	s := l.shard(group)
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[group]
	if g == nil {
		return false
	}
	i, ok := g.index[ch]
	if !ok {
		return false
	}
	end := len(g.list) - 1
	g.list[i] = g.list[end]
	g.index[g.list[i]] = i
	g.list[end] = nil
	g.list = g.list[:end]
	delete(g.index, ch)
	if len(g.list) == 0 {
		delete(s.groups, group)
		return true
	}
	return false
}

// discard frees a channel and returns the groups it left empty.
func (l *local) discard(name string) (emptied []string) {
	s := l.chanShard(name)
	s.mu.Lock()
	ch := s.channels[name]
	delete(s.channels, name)
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	ch.gmu.Lock()
	ch.dead = true
	for _, g := range ch.groups {
		if l.removeMember(g, ch) {
			emptied = append(emptied, g)
		}
	}
	ch.groups = nil
	ch.gmu.Unlock()
	ch.end()
	return emptied
}

// end marks a channel gone and tells its receiver.
func (ch *channel) end() {
	ch.mu.Lock()
	ch.gone = true
	ch.release()
	f, n := ch.onArrive, ch.notify
	ch.onArrive = nil
	ch.mu.Unlock()
	wake(n)
	if f != nil {
		f(0) // the receiver learns the channel is gone
	}
}

// deliver hands m to every local member of a group: the same Message value,
// so the body is shared and nothing is allocated per member.
func (l *local) deliver(group string, m Message) {
	m.Group = group
	now := time.Now().UnixNano()
	s := l.shard(group)
	s.mu.RLock()
	if g := s.groups[group]; g != nil {
		for _, ch := range g.list {
			ch.push(&m, now, true) // one copy for all (see queued)
		}
	}
	s.mu.RUnlock()
}

// deliverExcept is deliver that skips the channel named except.
func (l *local) deliverExcept(group string, m Message, except string) {
	if except == "" || !l.owns(except) {
		l.deliver(group, m)
		return
	}
	m.Group = group
	now := time.Now().UnixNano()
	s := l.shard(group)
	s.mu.RLock()
	if g := s.groups[group]; g != nil {
		for _, ch := range g.list {
			if ch.name != except {
				ch.push(&m, now, true)
			}
		}
	}
	s.mu.RUnlock()
}

// hasGroup reports whether a group has local members.
func (l *local) hasGroup(group string) bool {
	s := l.shard(group)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.groups[group] != nil
}

// groupNames lists the groups with local members.
func (l *local) groupNames() []string {
	var out []string
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		for g := range s.groups {
			out = append(out, g)
		}
		s.mu.RUnlock()
	}
	return out
}

// close frees every channel; pending and later Receives return ErrClosed.
func (l *local) close() {
	var chans []*channel
	for i := range l.chans {
		s := &l.chans[i]
		s.mu.Lock()
		s.closed = true
		for _, ch := range s.channels {
			chans = append(chans, ch)
		}
		s.channels = make(map[string]*channel)
		s.mu.Unlock()
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		s.groups = make(map[string]*members)
		s.mu.Unlock()
	}
	for _, ch := range chans {
		ch.gmu.Lock()
		ch.dead = true
		ch.groups = nil
		ch.gmu.Unlock()
		ch.end()
	}
}
