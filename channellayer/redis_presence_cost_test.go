package channellayer_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// TestRedisPresenceReadsInfosInBatches: listing or expiring a group reads
// the entries' infos with one HMGET per 500, not one HGET each, and still
// returns every entry with its info.
func TestRedisPresenceReadsInfosInBatches(t *testing.T) {
	srv := redistest.Start(t)
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	ctx := tctx(t, 30*time.Second)
	const n = 1200 // three batches
	members := make([]channellayer.Member, n)
	for i := range members {
		members[i] = channellayer.Member{Key: fmt.Sprintf("k%04d", i), Info: []byte("info " + strconv.Itoa(i))}
	}
	if err := l.TrackAll(ctx, map[string][]channellayer.Member{"big": members}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	reset := func() {
		if err := newClient(t, srv.Addr()).ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, got []channellayer.Member) {
		t.Helper()
		if len(got) != n {
			t.Fatalf("%s returned %d entries, want %d", what, len(got), n)
		}
		seen := map[string]bool{}
		for _, m := range got {
			i, err := strconv.Atoi(strings.TrimPrefix(m.Key, "k"))
			if err != nil || string(m.Info) != "info "+strconv.Itoa(i) || seen[m.Key] {
				t.Fatalf("%s returned %q with info %q (seen before: %v)", what, m.Key, m.Info, seen[m.Key])
			}
			seen[m.Key] = true
		}
		calls := commandCalls(t, newClient(t, srv.Addr()))
		if calls["hget"] != 0 || calls["hmget"] != 3 {
			t.Fatalf("%s: %d HGET and %d HMGET calls, want 0 and 3 (one per 500 entries)", what, calls["hget"], calls["hmget"])
		}
	}
	reset()
	list, err := l.List(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	check("List", list)

	testkit.Eventually(t, 10*time.Second, func() bool { // the entries' TTL has passed
		l, err := l.List(ctx, "big")
		return err == nil && len(l) == 0
	}, "the entries to expire")
	reset()
	expired, err := l.Expire(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	check("Expire", expired)
	if calls := commandCalls(t, newClient(t, srv.Addr())); calls["hdel"] != 3 || calls["zrem"] != 3 {
		t.Fatalf("Expire: %d HDEL and %d ZREM calls, want 3 each", calls["hdel"], calls["zrem"])
	}
	if left, err := l.List(ctx, "big"); err != nil || len(left) != 0 {
		t.Fatalf("after Expire, List = %d entries, %v; want none", len(left), err)
	}
}

// TestRedisPresenceScriptsRunBySHA: the pipelined presence scripts (the
// refresh, the sweep and the list of many groups) send a script's text
// only to a server that does not know it yet (after SCRIPT FLUSH, once per
// script); every other call is an EVALSHA, and the results are right
// either way.
func TestRedisPresenceScriptsRunBySHA(t *testing.T) {
	srv := redistest.Start(t)
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	c := newClient(t, srv.Addr())
	ctx := tctx(t, 30*time.Second)
	groups := []string{"a", "b", "c"}
	all := map[string][]channellayer.Member{}
	for _, g := range groups {
		all[g] = []channellayer.Member{{Key: g + "1", Info: []byte("x")}, {Key: g + "2", Info: []byte("y")}}
	}
	round := func() {
		t.Helper()
		if err := l.TrackAll(ctx, all, time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := l.ListAll(ctx, groups)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			if len(got[g]) != 2 {
				t.Fatalf("ListAll of %s: %v, want its 2 entries", g, got[g])
			}
		}
		if _, err := l.ExpireAll(ctx, groups); err != nil {
			t.Fatal(err)
		}
	}
	for i, flush := range []bool{true, false, false} {
		if flush {
			if err := c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		round()
		calls := commandCalls(t, c)
		wantEval := 0
		if flush {
			wantEval = 3 * len(groups) // each refused call of the 3 scripts again, with its text
		}
		if calls["eval"] != wantEval || calls["evalsha"] != 3*len(groups) {
			t.Errorf("round %d: %d EVAL and %d EVALSHA calls, want %d and %d", i, calls["eval"], calls["evalsha"], wantEval, 3*len(groups))
		}
	}
}
