package channellayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// local is the in-process half every backend shares: the channels this
// process owns, each a bounded queue, and the local members of each group.
type local struct {
	prefix   string // "<process id>!", the start of every channel name owned here
	capacity int
	expiry   time.Duration
	seq      atomic.Uint64

	mu       sync.RWMutex
	channels map[string]*channel
	groups   map[string]*members
	closed   bool
}

type members struct {
	list  []*channel
	index map[*channel]int
}

type queued struct {
	m  Message
	at int64 // arrival, Unix nanoseconds
}

type channel struct {
	name     string
	capacity int
	expiry   int64               // nanoseconds
	groups   map[string]struct{} // guarded by local.mu

	mu       sync.Mutex
	q        []queued // q[head:] are waiting; grows up to capacity, dropped when drained
	head     int
	overflow bool
	gone     bool
	notify   chan struct{} // capacity 1: "something changed", for Receive
	onArrive func()        // see Notifier
}

func (ch *channel) len() int { return len(ch.q) - ch.head }

func newLocal(capacity int, expiry time.Duration) *local {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	if expiry <= 0 {
		expiry = DefaultExpiry
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &local{
		prefix:   "p" + hex.EncodeToString(b[:]) + "!",
		capacity: capacity,
		expiry:   expiry,
		channels: make(map[string]*channel),
		groups:   make(map[string]*members),
	}
}

// owns reports whether a channel name belongs to this process.
func (l *local) owns(name string) bool { return strings.HasPrefix(name, l.prefix) }

// processOf returns the process part of a channel name.
func processOf(name string) (string, bool) {
	p, _, ok := strings.Cut(name, "!")
	return p, ok && p != ""
}

func (l *local) newChannel() (string, error) {
	name := l.prefix + strconv.FormatUint(l.seq.Add(1), 36)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", ErrClosed
	}
	l.channels[name] = &channel{
		name:     name,
		capacity: l.capacity,
		expiry:   int64(l.expiry),
		groups:   make(map[string]struct{}),
		notify:   make(chan struct{}, 1),
	}
	return name, nil
}

func (l *local) lookup(name string) *channel {
	l.mu.RLock()
	ch := l.channels[name]
	l.mu.RUnlock()
	return ch
}

// send queues m on a channel of this process.
func (l *local) send(name string, m Message) error {
	ch := l.lookup(name)
	if ch == nil {
		return l.noChannel("sending to", name)
	}
	if !ch.push(m, time.Now().UnixNano(), false) {
		return fmt.Errorf("sending to %s: %w", name, ErrChannelFull)
	}
	return nil
}

// push appends m; a full channel refuses it, and a refused group message
// flags the channel as overflowed.
func (ch *channel) push(m Message, now int64, group bool) bool {
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
		ch.q = append(ch.q, queued{m, now})
	}
	f := ch.onArrive
	ch.mu.Unlock()
	if f != nil {
		f()
	} else {
		ch.wake()
	}
	return accepted
}

func (ch *channel) dropExpired(now int64) {
	for ch.len() > 0 && now-ch.q[ch.head].at > ch.expiry {
		ch.q[ch.head] = queued{}
		ch.head++
	}
	ch.compact()
}

// compact frees the queue's memory once it is drained.
func (ch *channel) compact() {
	if ch.len() == 0 {
		if cap(ch.q) > 16 {
			ch.q = nil
		} else {
			clear(ch.q)
			ch.q = ch.q[:0]
		}
		ch.head = 0
	}
}

func (ch *channel) wake() {
	select {
	case ch.notify <- struct{}{}:
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
			return e.m, true, nil
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
		ch.mu.Unlock()
		if ok || err != nil {
			return m, err
		}
		select {
		case <-ch.notify:
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

// setNotify installs the arrival callback of a channel (see Notifier).
func (l *local) setNotify(name string, f func()) error {
	ch := l.lookup(name)
	if ch == nil {
		return l.noChannel("notifying on", name)
	}
	ch.mu.Lock()
	ch.onArrive = f
	pending := ch.len() > 0 || ch.overflow
	ch.mu.Unlock()
	if f != nil && pending {
		f()
	}
	return nil
}

// noChannel is the error for a channel that is not (or no longer) here:
// ErrClosed once the layer is closed, else ErrNoChannel.
func (l *local) noChannel(op, name string) error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return fmt.Errorf("%s %s: %w", op, name, ErrClosed)
	}
	return fmt.Errorf("%s %s: %w", op, name, ErrNoChannel)
}

// groupAdd adds a local channel to a group and reports whether it is the
// group's first local member.
func (l *local) groupAdd(group, name string) (first bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, ErrClosed
	}
	ch := l.channels[name]
	if ch == nil {
		return false, fmt.Errorf("adding %s to group %q: %w", name, group, ErrNoChannel)
	}
	g := l.groups[group]
	if g == nil {
		g = &members{index: make(map[*channel]int)}
		l.groups[group] = g
		first = true
	}
	if _, ok := g.index[ch]; ok {
		return false, nil
	}
	g.index[ch] = len(g.list)
	g.list = append(g.list, ch)
	ch.groups[group] = struct{}{}
	return first, nil
}

// groupDiscard removes a local channel from a group and reports whether the
// group has no local member left.
func (l *local) groupDiscard(group, name string) (last bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch := l.channels[name]
	if ch == nil {
		return false
	}
	return l.removeLocked(group, ch)
}

func (l *local) removeLocked(group string, ch *channel) (last bool) {
	g := l.groups[group]
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
	delete(ch.groups, group)
	if len(g.list) == 0 {
		delete(l.groups, group)
		return true
	}
	return false
}

// discard frees a channel and returns the groups it left empty.
func (l *local) discard(name string) (emptied []string) {
	l.mu.Lock()
	ch := l.channels[name]
	if ch == nil {
		l.mu.Unlock()
		return nil
	}
	delete(l.channels, name)
	for g := range ch.groups {
		if l.removeLocked(g, ch) {
			emptied = append(emptied, g)
		}
	}
	l.mu.Unlock()
	ch.mu.Lock()
	ch.gone = true
	ch.q, ch.head = nil, 0
	f := ch.onArrive
	ch.onArrive = nil
	ch.mu.Unlock()
	ch.wake()
	if f != nil {
		f() // the receiver learns the channel is gone
	}
	return emptied
}

// deliver hands m to every local member of a group: the same Message value,
// so the body is shared and nothing is allocated per member.
func (l *local) deliver(group string, m Message) {
	now := time.Now().UnixNano()
	l.mu.RLock()
	if g := l.groups[group]; g != nil {
		for _, ch := range g.list {
			ch.push(m, now, true)
		}
	}
	l.mu.RUnlock()
}

// hasGroup reports whether a group has local members.
func (l *local) hasGroup(group string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.groups[group] != nil
}

// groupNames lists the groups with local members.
func (l *local) groupNames() []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]string, 0, len(l.groups))
	for g := range l.groups {
		out = append(out, g)
	}
	return out
}

// close frees every channel; pending and later Receives return ErrClosed.
func (l *local) close() {
	l.mu.Lock()
	l.closed = true
	chans := l.channels
	l.channels = make(map[string]*channel)
	l.groups = make(map[string]*members)
	l.mu.Unlock()
	for _, ch := range chans {
		ch.mu.Lock()
		ch.gone = true
		ch.q, ch.head = nil, 0
		f := ch.onArrive
		ch.onArrive = nil
		ch.mu.Unlock()
		ch.wake()
		if f != nil {
			f()
		}
	}
}
