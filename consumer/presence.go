package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/chatterpro/chatterpro/presence"
)

// Track adds the connection to the presence of group, cluster-wide, under
// key (a user, a session: the connections of one key are listed as one,
// with a meta each) with meta (a small value that encodes as JSON). The
// framework keeps the entry alive while the connection lives and removes it
// when the connection ends: at once after a close with 1000 (a leave on
// purpose, which also removes the key's entries waiting out a grace
// period), else after Options.PresenceGrace, so that a quick reconnect is
// not a leave. If Connect refuses the connection after Track, the entry is
// removed at once.
//
// While tracked, the connection receives the group's changes as layer
// events of type presence.DiffType (a presence.Diff: keys joined, left or
// updated, and the count), coalesced per group and node; handle them with
// On. Presence lists the whole state. The layer must implement
// channellayer.Presence (both backends do).
//
// Unlike the Conn's other methods, Track may run concurrently with one
// GroupAddSince or GroupAdd of the same connection (from Connect, say), so
// that a join that both tracks and reads the history it missed waits for
// one round trip to the layer, not two in a row.
func (c *Conn) Track(ctx context.Context, group, key string, meta any) error {
	tr, err := c.srv.tracker(ctx)
	if err != nil {
		return err
	}
	if err := tr.Track(ctx, group, key, c.channel, meta); err != nil {
		return err
	}
	if !slices.Contains(c.tracked, group) {
		c.tracked = append(c.tracked, group)
	}
	return nil
}

// Untrack removes the connection from the presence of group at once.
func (c *Conn) Untrack(ctx context.Context, group string) error {
	i := slices.Index(c.tracked, group)
	if i < 0 {
		return nil
	}
	c.tracked = slices.Delete(c.tracked, i, i+1)
	tr, err := c.srv.tracker(ctx)
	if err != nil {
		return err
	}
	return tr.Leave(ctx, group, c.channel, 0, false)
}

// Presence returns the presence of group, cluster-wide: one entry per key,
// sorted by key, with the metas of its connections, oldest first.
func (c *Conn) Presence(ctx context.Context, group string) ([]presence.Presence, error) {
	tr, err := c.srv.tracker(ctx)
	if err != nil {
		return nil, err
	}
	return tr.List(ctx, group)
}

// leavePresence ends the connection's presence entries: with the grace
// period unless it closed normally (1000), at once and finally if it did,
// at once without finality if it never was accepted.
func (c *Conn) leavePresence(ctx context.Context, accepted bool) {
	if len(c.tracked) == 0 {
		return
	}
	tr, err := c.srv.tracker(ctx)
	if err != nil {
		return
	}
	grace, final := c.srv.opts.PresenceGrace, c.wire.Code() == StatusNormal
	if !accepted {
		grace, final = 0, false
	}
	for _, g := range c.tracked {
		if err := tr.Leave(ctx, g, c.channel, grace, final); err != nil {
			c.Logger().Warn("leaving presence failed; the entry expires with its TTL", "group", g, "err", err)
		}
	}
	c.tracked = nil
}

// tracker returns the server's presence tracker, made on first use.
func (s *Server) tracker(ctx context.Context) (*presence.Tracker, error) {
	s.trackerMu.Lock()
	defer s.trackerMu.Unlock()
	if s.presence != nil {
		return s.presence, nil
	}
	if s.trackerClosed {
		return nil, ErrShutdown
	}
	opts := s.opts.Presence
	if opts.Logger == nil {
		opts.Logger = s.log
	}
	tr, err := presence.New(ctx, s.layer, opts)
	if err != nil {
		return nil, fmt.Errorf("consumer: presence: %w", err)
	}
	s.presence = tr
	return tr, nil
}

// closeTracker stops the presence tracker, once every connection is done.
func (s *Server) closeTracker(ctx context.Context) error {
	s.trackerMu.Lock()
	tr := s.presence
	s.presence, s.trackerClosed = nil, true
	s.trackerMu.Unlock()
	if tr == nil {
		return nil
	}
	if err := tr.Close(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Presence returns the presence of group, cluster-wide, as Conn.Presence
// does, for code outside a connection (a node's periodic work, an HTTP
// handler). The layer must implement channellayer.Presence.
func (s *Server) Presence(ctx context.Context, group string) ([]presence.Presence, error) {
	tr, err := s.tracker(ctx)
	if err != nil {
		return nil, err
	}
	return tr.List(ctx, group)
}

// PresenceCached returns the presence of group as this node's tracker
// knows it, with no call to the layer (see presence.Tracker.Cached): read
// when the group's first connection here was tracked and kept up to date
// from the change signals since, so it lags the layer by the time a signal
// takes and is never behind the diffs. Read it when a presence.Diff of the
// group arrives, to rebuild a view of the whole group without a round trip.
// ok is false when no connection of this node is tracked in group (or
// its state was never read): call Presence then.
func (s *Server) PresenceCached(group string) (list []presence.Presence, ok bool) {
	s.trackerMu.Lock()
	tr := s.presence
	s.trackerMu.Unlock()
	if tr == nil {
		return nil, false
	}
	return tr.Cached(group)
}
