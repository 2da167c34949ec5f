package channellayer

import (
	"context"
	"errors"
	"fmt"
)

// Recovery is what joining a group "since" a message ID found: what the
// joiner missed, and whether the group's history could cover the gap.
type Recovery struct {
	// Messages are the group's recorded messages after the ID given, oldest
	// first; or, when the gap could not be covered (Recovered false), its
	// latest messages.
	Messages []Message
	// Recovered reports that an ID was given and Messages hold everything
	// recorded after it: nothing was missed. It is false for a first join
	// (no ID) and when the ID is malformed, unknown or older than what the
	// group still keeps: the joiner may have missed messages.
	Recovered bool

	// last is the newest ID the joiner has: live messages up to it repeat
	// Messages (they were recorded between GroupAdd and the history read).
	last string
}

// Fresh reports whether a live message of the recovered group is new to the
// joiner, and not a repeat of one in Messages. Call it, in order, for every
// message the group delivers after JoinSince; messages without an ID (not
// recorded) are always fresh.
func (r *Recovery) Fresh(m Message) bool {
	if r.last == "" || m.ID == "" {
		return true
	}
	if CompareID(m.ID, r.last) <= 0 {
		return false
	}
	r.last = "" // messages of one group arrive in order: the rest is new
	return true
}

// Filters reports whether Fresh may still drop a live message as a repeat:
// false once a live message has passed the newest of Messages, and when
// the history read returned nothing (then nothing can repeat).
func (r *Recovery) Filters() bool { return r.last != "" }

// JoinSince adds channel to group and reads the group's history after since,
// in that order, so that nothing recorded in between is skipped: a message
// recorded after GroupAdd reaches the channel live, and a message that is
// both in Messages and live is dropped by Recovery.Fresh. When since is
// empty, malformed, unknown or expired, Messages holds the group's latest
// recent messages instead and Recovered is false.
//
// The layer must implement History; if reading the history fails, the
// channel leaves the group again and the error is returned.
func JoinSince(ctx context.Context, l Layer, group, channel, since string, recent int) (Recovery, error) {
	h, ok := l.(History)
	if !ok {
		return Recovery{}, fmt.Errorf("%w: the layer keeps no history (it does not implement channellayer.History)", ErrInvalid)
	}
	if err := l.GroupAdd(ctx, group, channel); err != nil {
		return Recovery{}, err
	}
	rec, err := readSince(ctx, h, group, since, recent)
	if err != nil {
		_ = l.GroupDiscard(context.WithoutCancel(ctx), group, channel)
		return Recovery{}, err
	}
	return rec, nil
}

func readSince(ctx context.Context, h History, group, since string, recent int) (Recovery, error) {
	if since != "" && ValidID(since) {
		msgs, err := h.Since(ctx, group, since)
		switch {
		case err == nil:
			rec := Recovery{Messages: msgs, Recovered: true, last: since}
			if len(msgs) > 0 {
				rec.last = msgs[len(msgs)-1].ID
			}
			return rec, nil
		case !errors.Is(err, ErrUnknownID):
			return Recovery{}, err
		}
	}
	msgs, err := h.Recent(ctx, group, recent)
	if err != nil {
		return Recovery{}, err
	}
	rec := Recovery{Messages: msgs}
	if len(msgs) > 0 {
		rec.last = msgs[len(msgs)-1].ID
	}
	return rec, nil
}
