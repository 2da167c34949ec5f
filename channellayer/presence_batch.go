package channellayer

import (
	"context"
	"fmt"
	"time"
)

// PresenceRefresher is implemented by layers that can add or refresh many
// presence entries, of many groups, in one call: a process refreshing the
// entries of all its connections costs one round trip to its server, not
// one per entry. Both backends implement it.
type PresenceRefresher interface {
	// TrackAll adds or refreshes every entry of groups (group → entries);
	// each expires ttl from now, as if tracked one by one with Track
	// (which may keep the infos as they are).
	TrackAll(ctx context.Context, groups map[string][]Member, ttl time.Duration) error
	// ExpireAll is Expire for many groups in one call: it removes their
	// expired entries and returns them by group (groups with none are
	// left out). Each expired entry is returned by exactly one call,
	// cluster-wide, as with Expire.
	ExpireAll(ctx context.Context, groups []string) (map[string][]Member, error)
}

// PresenceLister is implemented by layers that can list the entries of
// many groups in one call: a process that diffs the presence of many
// groups reads them all with one round trip to its server (in a Redis
// Cluster, one per shard), not one per group. Both backends implement it.
//
// It is a capability of its own, beside PresenceRefresher, so that a layer
// written for PresenceRefresher keeps that capability unchanged.
type PresenceLister interface {
	// ListAll is List for many groups in one call: it returns the live
	// entries of each group, sorted by key, exactly as List returns them.
	// A group with no live entries is left out of the map (as in
	// ExpireAll), so that m[group] is nil for it, as List's result is.
	// A group named twice is listed once.
	ListAll(ctx context.Context, groups []string) (map[string][]Member, error)
}

// PresenceSweeper is implemented by layers that, when they remove the
// expired entries of groups, also tell when each group's next entry
// expires: a process then sweeps a group again when something there can
// have expired, not every few seconds. At 100 000 people on 8 nodes,
// sweeps on a timer were most of the commands Redis ran while nobody
// talked. Both backends implement it.
type PresenceSweeper interface {
	// SweepAll is ExpireAll that also answers, for every group named,
	// when its earliest remaining entry expires.
	SweepAll(ctx context.Context, groups []string) (map[string]Swept, error)
}

// Swept is what SweepAll did to one group.
type Swept struct {
	Expired []Member  // the entries it removed, as ExpireAll returns them
	Next    time.Time // when the earliest entry left expires; zero if none is left
}

var (
	_ PresenceSweeper   = (*Memory)(nil)
	_ PresenceSweeper   = (*Redis)(nil)
	_ PresenceRefresher = (*Memory)(nil)
	_ PresenceRefresher = (*Redis)(nil)
	_ PresenceLister    = (*Memory)(nil)
	_ PresenceLister    = (*Redis)(nil)
)

func checkTrackAll(groups map[string][]Member, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("%w: presence needs a positive TTL", ErrInvalid)
	}
	for g, entries := range groups {
		if g == "" {
			return fmt.Errorf("%w: presence needs a group", ErrInvalid)
		}
		for _, e := range entries {
			if e.Key == "" {
				return fmt.Errorf("%w: presence needs a key (group %q)", ErrInvalid, g)
			}
		}
	}
	return nil
}

// TrackAll implements PresenceRefresher.
func (m *Memory) TrackAll(ctx context.Context, groups map[string][]Member, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkTrackAll(groups, ttl); err != nil {
		return err
	}
	expires := time.Now().Add(ttl)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for group, entries := range groups {
		g := m.presence[group]
		if g == nil {
			g = make(map[string]memEntry, len(entries))
			m.presence[group] = g
		}
		for _, e := range entries {
			g[e.Key] = memEntry{info: e.Info, expires: expires} // kept as it is: see Presence.Track
		}
	}
	return nil
}

// ExpireAll implements PresenceRefresher.
func (m *Memory) ExpireAll(ctx context.Context, groups []string) (map[string][]Member, error) {
	out := make(map[string][]Member)
	for _, g := range groups {
		expired, err := m.Expire(ctx, g)
		if err != nil {
			return nil, err
		}
		if len(expired) > 0 {
			out[g] = expired
		}
	}
	return out, nil
}

// SweepAll implements PresenceSweeper.
func (m *Memory) SweepAll(ctx context.Context, groups []string) (map[string]Swept, error) {
	out := make(map[string]Swept, len(groups))
	for _, g := range groups {
		expired, err := m.Expire(ctx, g)
		if err != nil {
			return nil, err
		}
		var next time.Time
		m.mu.Lock()
		for _, e := range m.presence[g] {
			if next.IsZero() || e.expires.Before(next) {
				next = e.expires
			}
		}
		m.mu.Unlock()
		out[g] = Swept{Expired: expired, Next: next}
	}
	return out, nil
}

// ListAll implements PresenceLister: every group is read under one hold of
// the lock, so the result is one consistent view of the store.
func (m *Memory) ListAll(ctx context.Context, groups []string) (map[string][]Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string][]Member)
	for _, g := range groups {
		if live := m.listLocked(g, now); len(live) > 0 {
			out[g] = live
		}
	}
	return out, nil
}
