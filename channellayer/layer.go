package channellayer

import (
	"context"
	"time"
)

// Layer carries messages between consumers, in one process or across many.
// It has the shape of the Django Channels layer specification: every consumer
// owns a channel it receives on, and channels join named groups that are sent
// to as one.
//
// All methods are safe for concurrent use. Every method that may block takes a
// context; a cancelled context makes it return ctx.Err() promptly.
type Layer interface {
	// NewChannel creates a channel owned by this process and returns its
	// name, unique across the cluster. Release it with DiscardChannel.
	NewChannel(ctx context.Context) (string, error)
	// Send delivers m to one channel, on any process. A full local channel
	// returns ErrChannelFull.
	Send(ctx context.Context, channel string, m Message) error
	// Receive waits for the next message on a channel of this process.
	// It returns ErrOverflow once a group message was dropped because the
	// channel was full: the consumer behind it is too slow to keep.
	Receive(ctx context.Context, channel string) (Message, error)
	// GroupAdd adds a channel of this process to a group. Messages sent to
	// the group after GroupAdd returns reach the channel.
	GroupAdd(ctx context.Context, group, channel string) error
	// GroupDiscard removes a channel from a group.
	GroupDiscard(ctx context.Context, group, channel string) error
	// GroupSend delivers m once to every channel in the group, on every
	// process. Full channels are skipped and flagged (see Receive); nobody
	// else waits for them.
	GroupSend(ctx context.Context, group string, m Message) error
	// DiscardChannel removes a channel from all its groups and frees it.
	DiscardChannel(ctx context.Context, channel string) error
	// Close releases the layer. Calls after Close return ErrClosed.
	Close(ctx context.Context) error
}

// History is implemented by layers that keep the last messages of a group.
// IDs are cluster-wide, increase with every recorded message of a group, and
// are opaque to clients; compare them with CompareID.
type History interface {
	// GroupSendRecorded records m in the group's history and sends it to the
	// group, atomically. The returned message carries the new ID, also as the
	// first field "id" of its body.
	GroupSendRecorded(ctx context.Context, group string, m Message) (Message, error)
	// Recent returns up to n of the group's latest messages, oldest first.
	Recent(ctx context.Context, group string, n int) ([]Message, error)
	// Since returns the messages recorded after id, oldest first. If id is
	// malformed, unknown or no longer kept, it returns ErrUnknownID.
	Since(ctx context.Context, group, id string) ([]Message, error)
}

// Recorder is implemented by layers that can record a message without its
// sender waiting for the answer, so that a busy process records many
// messages in one round trip to its server. Both backends implement it.
type Recorder interface {
	// GroupSendRecordedAsync is GroupSendRecorded without waiting: done
	// gets what GroupSendRecorded would have returned, exactly once, on
	// another goroutine or before the call returns. The messages of one
	// caller to one group are recorded, and their done called, in call
	// order, failures included. done must not block: it holds up the
	// results of other callers.
	GroupSendRecordedAsync(group string, m Message, done func(Message, error))
}

// ExceptSender is implemented by layers that can send to a group except one
// of its channels, as Phoenix's broadcast_from does: the sender's own
// connection does not get its copy. The message is encoded once, as for
// GroupSend; only the process that owns the excepted channel skips it. Both
// backends implement it.
type ExceptSender interface {
	// GroupSendExcept is GroupSend that skips the channel except (which
	// may be in the group or not).
	GroupSendExcept(ctx context.Context, group string, m Message, except string) error
}

// Presence is implemented by layers that know who is online in a group,
// cluster-wide. Entries live until Untrack or until their TTL passes without
// a refresh; the owner refreshes an entry by tracking it again.
type Presence interface {
	// Track adds or refreshes an entry; it expires ttl from now. The
	// layer may keep info as it is (the memory layer does, rather than
	// hold a second copy of every entry): do not modify it afterwards,
	// nor the Info of a Member that List or Expire returns.
	Track(ctx context.Context, group, key string, info []byte, ttl time.Duration) error
	// Untrack removes an entry at once.
	Untrack(ctx context.Context, group, key string) error
	// List returns the group's entries that have not expired, by key.
	List(ctx context.Context, group string) ([]Member, error)
	// Expire removes the group's expired entries and returns them. Each
	// expired entry is returned by exactly one call, cluster-wide, so the
	// caller may announce the departure once.
	Expire(ctx context.Context, group string) ([]Member, error)
}

// Member is one presence entry.
type Member struct {
	Key  string
	Info []byte
}

// Checker is implemented by layers that depend on a server and can tell
// whether it is reachable right now (for a readiness probe).
type Checker interface {
	Check(ctx context.Context) error
}

// Defaults shared by the backends.
const (
	// DefaultCapacity is how many messages a channel holds before it is full.
	DefaultCapacity = 100
	// DefaultExpiry is how long a message waits in a channel before it is dropped.
	DefaultExpiry = 60 * time.Second
	// DefaultHistorySize is how many messages a group's history keeps.
	DefaultHistorySize = 100
)

// Notifier is implemented by layers that can announce arrivals on a channel
// of this process, so that an idle consumer needs no goroutine waiting in
// Receive. Both backends implement it.
type Notifier interface {
	// Notify makes the layer call f each time a message, an overflow, or
	// the channel's end arrives on channel. For a message, waiting is the
	// number of messages then waiting, this one included: 1 if the channel
	// was empty. For an overflow or the end it is 0, and so it is when f
	// is installed while something waits (f is then called at once). A
	// receiver that takes everything waiting each time it looks need only
	// start looking on a call with waiting 0 or 1: a larger count follows
	// such a call that no look has answered yet. f must not block; it is
	// called from the sender's goroutine. Passing nil removes it.
	Notify(channel string, f func(waiting int)) error
	// TryReceive is Receive without waiting: ok is false if nothing waits.
	TryReceive(channel string) (m Message, ok bool, err error)
}

// ChannelCapacity is implemented by layers that can make a channel hold
// more (or fewer) messages than the layer's capacity: a channel that takes
// bursts, such as the one of a process's presence tracker. Both backends
// implement it.
type ChannelCapacity interface {
	// NewChannelCapacity is NewChannel for a channel that holds up to
	// capacity messages; 0 means the layer's capacity.
	NewChannelCapacity(ctx context.Context, capacity int) (string, error)
}

// Drainer is implemented by layers that can hand over, in one call, every
// message waiting on a channel of this process: a consumer woken by Notify
// takes a burst at once instead of one TryReceive per message. Both
// backends implement it.
type Drainer interface {
	// TryReceiveAll appends every message waiting on channel to buf,
	// oldest first, and returns the extended slice (buf itself if nothing
	// waits). Its errors are those of TryReceive; after ErrOverflow
	// nothing is appended.
	TryReceiveAll(channel string, buf []Message) ([]Message, error)
}
