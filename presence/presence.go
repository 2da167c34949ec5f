// Package presence tracks who is online in a group, cluster-wide, for any
// consumer: one process's Tracker keeps the entries of its connections
// alive on the channel layer, removes them when connections end (after an
// optional grace period, so that a quick reconnect is not a leave), merges
// the connections of one key (three tabs of one user are one key with three
// metas), and delivers join/leave diffs to the tracked connections as a
// layer event, coalesced per group and process.
//
// Each tracker keeps the presence of the groups it has entries in from the
// change signals the trackers send each other (the entries set and gone),
// so that a change costs no read of the group; it reads a group in full
// only when the group is new to it, after lost signals, and now and then
// to repair.
//
// Entries of a process that dies without a goodbye expire after the TTL;
// the first tracker to sweep the group removes them (the layer's Expire
// hands each entry to exactly one caller) and every process delivers the
// resulting leave to its own connections, once. A person who is back on
// another process by then is no leave, even if the signal of their new
// entry has not arrived yet: the sweep's signal carries it.
//
// Package consumer builds on it (Conn.Track); use it directly only to track
// something that is not a connection.
package presence

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/chatterpro/chatterpro/internal/fold"
)

// DiffType is the type of the layer event that carries a Diff.
const DiffType = "presence_diff"

// Presence is one key of a group and the metas of its entries (one per
// connection), oldest first.
type Presence struct {
	Key   string            `json:"key"`
	Metas []json.RawMessage `json:"metas"`
}

// Diff is what changed in a group since the last diff its receiver got:
// keys that appeared (with their metas), keys whose every entry is gone
// (with their last metas), and keys still present whose metas changed (a
// second tab, a tab closed). A key that came and went between two diffs is
// in both Joins and Leaves. Count is the number of keys after the change.
// It travels as the body of a layer event of type DiffType.
type Diff struct {
	Group   string                       `json:"group"`
	Joins   map[string][]json.RawMessage `json:"joins"`
	Leaves  map[string][]json.RawMessage `json:"leaves"`
	Updates map[string][]json.RawMessage `json:"updates,omitempty"`
	Count   int                          `json:"count"`
}

// Empty reports whether nothing changed.
func (d Diff) Empty() bool { return len(d.Joins) == 0 && len(d.Leaves) == 0 && len(d.Updates) == 0 }

// state is a group's presence: key → metas.
type state map[string][]json.RawMessage

// diff returns what changed from old to now.
func diff(group string, old, now state) Diff {
	d := Diff{Group: group, Joins: map[string][]json.RawMessage{}, Leaves: map[string][]json.RawMessage{}, Count: len(now)}
	for k, metas := range now {
		prev, ok := old[k]
		switch {
		case !ok:
			d.Joins[k] = metas
		case !sameMetas(prev, metas):
			if d.Updates == nil {
				d.Updates = map[string][]json.RawMessage{}
			}
			d.Updates[k] = metas
		}
	}
	for k, metas := range old {
		if _, ok := now[k]; !ok {
			d.Leaves[k] = metas
		}
	}
	return d
}

func sameMetas(a, b []json.RawMessage) bool {
	return slices.EqualFunc(a, b, func(x, y json.RawMessage) bool { return string(x) == string(y) })
}

// list turns a state into Presences sorted by key (case-insensitively, then
// exactly, so the order is total).
func (s state) list() []Presence {
	out := make([]Presence, 0, len(s))
	for k, metas := range s {
		out = append(out, Presence{Key: k, Metas: metas})
	}
	sortPresences(out)
	return out
}

// sortPresences sorts by key, case-insensitively, then exactly.
func sortPresences(out []Presence) {
	slices.SortFunc(out, func(a, b Presence) int {
		if c := fold.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
}
