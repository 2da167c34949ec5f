package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/exampletest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/presence"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

type frame struct {
	Type      string
	Status    string
	Code      string
	User      string
	Option    string
	ID        string
	Recovered bool
	Tally     map[string]int
	Online    []presence.Presence
	Missed    []json.RawMessage
	Joins     map[string]json.RawMessage
	Data      struct{ Tally map[string]int }
}

// next returns the next frame of type typ, skipping others (presence
// diffs come when they come).
func next(t *testing.T, ctx context.Context, c *consumertest.Client, typ string) frame {
	t.Helper()
	for {
		var f frame
		if err := c.ReceiveJSON(ctx, &f); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

func TestPoll(t *testing.T) {
	opts := consumer.Options{Presence: presence.Options{Interval: 20 * time.Millisecond}}
	exampletest.Backends(t, opts, newApp, func(t *testing.T, node func() *exampletest.Node) {
		ctx := exampletest.Context(t, 15*time.Second)
		a, b := node(), node()
		dial := func(n *exampletest.Node, user, since string) *consumertest.Client {
			c, _, err := n.Handler.Dial(ctx, "/ws/poll/demo/?user="+user+"&since="+since, consumertest.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		ada := dial(a, "ada", "")
		if st := next(t, ctx, ada, "state"); len(st.Online) != 1 || st.Online[0].Key != "ada" {
			t.Fatalf("ada's state %+v, want herself online", st)
		}
		bob := dial(b, "bob", "")
		next(t, ctx, bob, "state")
		// Presence: ada hears bob arrive, across nodes.
		for d := next(t, ctx, ada, "presence_diff"); d.Joins["bob"] == nil; d = next(t, ctx, ada, "presence_diff") {
		}

		// A vote gets its reply with the tally; both see the vote.
		ada.SendText(ctx, `{"type":"vote","ref":1,"option":"tabs"}`)
		if r := next(t, ctx, ada, "reply"); r.Status != "ok" || r.Data.Tally["tabs"] != 1 {
			t.Fatalf("reply %+v, want ok with tabs 1", r)
		}
		first := next(t, ctx, bob, "vote")
		if first.User != "ada" || first.Option != "tabs" || first.ID == "" {
			t.Fatalf("bob saw %+v", first)
		}
		ada.SendText(ctx, `{"type":"vote","ref":2,"option":"emacs"}`)
		if r := next(t, ctx, ada, "reply"); r.Status != "error" || r.Code != "invalid" {
			t.Fatalf("reply %+v, want an invalid error", r)
		}

		// Broadcast-from: bob's cheer reaches ada, not bob.
		bob.SendText(ctx, `{"type":"cheer"}`)
		if c := next(t, ctx, ada, "cheer"); c.User != "bob" {
			t.Fatalf("cheer %+v", c)
		}
		bob.SendText(ctx, `{"type":"ping"}`)
		if f := next(t, ctx, bob, "pong"); f.Type != "pong" {
			t.Fatal("no pong")
		}

		// Recovery: a tab that saw ada's vote comes back after bob voted,
		// and gets exactly what it missed.
		bob.SendText(ctx, `{"type":"vote","ref":3,"option":"spaces"}`)
		next(t, ctx, bob, "reply")
		back := dial(a, "carol", first.ID)
		st := next(t, ctx, back, "state")
		if !st.Recovered || len(st.Missed) != 1 || st.Tally["tabs"] != 1 || st.Tally["spaces"] != 1 {
			t.Fatalf("state after a resume %+v, want recovered with bob's vote missed, tally 1/1", st)
		}
	})
}
