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
	at time.Time
}

type channel struct {
	name   string
	expiry time.Duration
	groups map[string]struct{} // guarded by local.mu

	mu       sync.Mutex
	buf      []queued // ring of capacity entries
	head, n  int
	overflow bool
	gone     bool
	notify   chan struct{} // capacity 1: "something changed"
}

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
		name:   name,
		expiry: l.expiry,
		groups: make(map[string]struct{}),
		buf:    make([]queued, l.capacity),
		notify: make(chan struct{}, 1),
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
	if !ch.push(m, time.Now(), false) {
		return fmt.Errorf("sending to %s: %w", name, ErrChannelFull)
	}
	return nil
}

// push appends m; a full channel refuses it, and a refused group message
// flags the channel as overflowed.
func (ch *channel) push(m Message, now time.Time, group bool) bool {
	ch.mu.Lock()
	if ch.gone {
		ch.mu.Unlock()
		return true // discarded channel: nothing to deliver to
	}
	if ch.n == len(ch.buf) {
		ch.dropExpired(now)
	}
	if ch.n == len(ch.buf) {
		if group {
			ch.overflow = true
			ch.mu.Unlock()
			ch.wake()
		} else {
			ch.mu.Unlock()
		}
		return false
	}
	ch.buf[(ch.head+ch.n)%len(ch.buf)] = queued{m, now}
	ch.n++
	ch.mu.Unlock()
	ch.wake()
	return true
}

func (ch *channel) dropExpired(now time.Time) {
	for ch.n > 0 && now.Sub(ch.buf[ch.head].at) > ch.expiry {
		ch.buf[ch.head] = queued{}
		ch.head = (ch.head + 1) % len(ch.buf)
		ch.n--
	}
}

func (ch *channel) wake() {
	select {
	case ch.notify <- struct{}{}:
	default:
	}
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
		if ch.overflow {
			ch.overflow = false
			ch.mu.Unlock()
			return Message{}, fmt.Errorf("receiving on %s: %w", name, ErrOverflow)
		}
		now := time.Now()
		for ch.n > 0 {
			q := ch.buf[ch.head]
			ch.buf[ch.head] = queued{}
			ch.head = (ch.head + 1) % len(ch.buf)
			ch.n--
			if now.Sub(q.at) <= ch.expiry {
				ch.mu.Unlock()
				return q.m, nil
			}
		}
		ch.mu.Unlock()
		select {
		case <-ch.notify:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
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
	for i := range ch.buf {
		ch.buf[i] = queued{}
	}
	ch.n = 0
	ch.mu.Unlock()
	ch.wake()
	return emptied
}

// deliver hands m to every local member of a group: the same Message value,
// so the body is shared and nothing is allocated per member.
func (l *local) deliver(group string, m Message) {
	now := time.Now()
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
		ch.mu.Unlock()
		ch.wake()
	}
}
