package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/presence"
)

// lobby tracks each connection under the user in its scope and forwards
// presence diffs to the client.
func lobby() consumer.Consumer {
	return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
		c.On(presence.DiffType, func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
			return c.Send(m.Body)
		})
		if err := c.Track(ctx, "lobby", c.Scope().User.Name, map[string]string{"conn": c.Channel()}); err != nil {
			return err
		}
		if c.Scope().Query.Get("refuse") != "" {
			return consumer.Refuse(403, "refused after Track")
		}
		return nil
	}}
}

func TestConnTrack(t *testing.T) {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(ctx) })
	srv, err := consumer.NewServer(consumer.Options{
		Layer:         layer,
		Presence:      presence.Options{Interval: 20 * time.Millisecond},
		PresenceGrace: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(ctx) })
	open := func(user string, query string) *consumertest.Communicator {
		scope := consumer.Scope{User: &consumer.User{Name: user}}
		if query != "" {
			scope.Query = map[string][]string{"refuse": {"1"}}
		}
		return consumertest.New(t, lobby, consumertest.Options{Layer: layer, Server: srv, Scope: scope})
	}
	watcher := open("watcher", "")
	if err := watcher.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	nextDiff := func() presence.Diff {
		t.Helper()
		var d presence.Diff
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := watcher.ReceiveJSON(cctx, &d); err != nil {
			t.Fatalf("waiting for a diff: %v", err)
		}
		return d
	}

	// Two tabs of ada: one join, then one update.
	tab1, tab2 := open("ada", ""), open("ada", "")
	if err := tab1.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if d := nextDiff(); len(d.Joins["ada"]) != 1 || d.Count != 2 {
		t.Fatalf("diff %+v, want ada joined with one meta, 2 keys", d)
	}
	if err := tab2.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if d := nextDiff(); len(d.Updates["ada"]) != 2 || len(d.Joins) != 0 {
		t.Fatalf("diff %+v, want ada updated with two metas", d)
	}

	// A connection refused after Track leaves no entry: at most a key that
	// came and went (in both joins and leaves), and the count unchanged.
	refused := open("mallory", "refuse")
	if err := refused.Connect(ctx); err == nil {
		t.Fatal("Connect accepted, want refused")
	}
	for joined := false; ; {
		d := nextDiff()
		joined = joined || d.Joins["mallory"] != nil
		if d.Leaves["mallory"] != nil {
			if !joined || d.Count != 2 {
				t.Fatalf("diff %+v (joined before: %v), want mallory gone, 2 keys", d, joined)
			}
			break
		}
	}

	// A lost tab (no normal close) stays for the grace period: no diff
	// until it ends, then an update; a normal close of the last tab is a
	// leave at once.
	tab1.Disconnect(ctx, consumer.StatusGoingAway)
	start := time.Now()
	d := nextDiff()
	if waited := time.Since(start); waited < 150*time.Millisecond || len(d.Updates["ada"]) != 1 {
		t.Fatalf("diff %+v after %v, want ada with one meta after the 200 ms grace", d, waited)
	}
	if len(d.Joins) != 0 || len(d.Leaves) != 0 {
		t.Fatalf("diff %+v: a join or a leave showed up", d)
	}
	tab2.Disconnect(ctx, consumer.StatusNormal)
	if d := nextDiff(); len(d.Leaves["ada"]) != 1 || d.Count != 1 {
		t.Fatalf("diff %+v, want ada left, 1 key", d)
	}
	if quiet, extra := watcher.ReceiveNothing(100 * time.Millisecond); !quiet {
		t.Fatalf("extra frame %s", extra)
	}
}

// Track may run beside GroupAddSince (a join that tracks and reads the
// history it missed waits for one round trip, not two): both take effect,
// under the race detector, and a refusal after them removes the entry.
func TestTrackBesideGroupAddSince(t *testing.T) {
	ctx := context.Background()
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { layer.Close(ctx) })
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, Presence: presence.Options{Interval: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(ctx) })
	m, _ := channellayer.NewMessage("post", map[string]int{"n": 1})
	rec, err := layer.GroupSendRecorded(ctx, "room", m)
	if err != nil {
		t.Fatal(err)
	}
	join := func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			tracked := make(chan error, 1)
			go func() { tracked <- c.Track(ctx, "room", c.Scope().User.Name, nil) }()
			got, err := c.GroupAddSince(ctx, "room", "", 10)
			if terr := <-tracked; terr != nil {
				return terr
			}
			if err != nil {
				return err
			}
			if len(got.Messages) != 1 || got.Messages[0].ID != rec.ID {
				return consumer.Refuse(500, "history without the recorded message")
			}
			if c.Scope().Query.Get("refuse") != "" {
				return consumer.Refuse(403, "refused after Track")
			}
			return nil
		}}
	}
	open := func(user string, refuse bool) error {
		scope := consumer.Scope{User: &consumer.User{Name: user}}
		if refuse {
			scope.Query = map[string][]string{"refuse": {"1"}}
		}
		return consumertest.New(t, join, consumertest.Options{Layer: layer, Server: srv, Scope: scope}).Connect(ctx)
	}
	for _, user := range []string{"ada", "bob", "cid"} {
		if err := open(user, false); err != nil {
			t.Fatalf("%s: %v", user, err)
		}
	}
	if err := open("mallory", true); err == nil {
		t.Fatal("Connect accepted, want refused")
	}
	who, err := srv.Presence(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range who {
		keys = append(keys, p.Key)
	}
	if len(keys) != 3 || keys[0] != "ada" || keys[1] != "bob" || keys[2] != "cid" {
		t.Errorf("presence %v, want ada, bob and cid (mallory, refused, removed)", keys)
	}
}
