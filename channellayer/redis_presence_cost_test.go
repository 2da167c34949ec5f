package channellayer_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
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

// TestRedisPresenceKeysExpireSeldom: a group's presence keys outlive its
// last write by at least twice the TTL plus a minute; a write sets their
// expiry again only when less than that is left (to twice that), so the
// refreshes that come every third of the TTL run no PEXPIRE.
func TestRedisPresenceKeysExpireSeldom(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	l := newRedisLayer(t, srv.Addr(), prefix, channellayer.RedisOptions{})
	c := newClient(t, srv.Addr())
	ctx := tctx(t, 30*time.Second)
	const ttl = 30 * time.Second
	keep := 2*ttl + time.Minute
	entries := map[string][]channellayer.Member{"room": {{Key: "a", Info: []byte("x")}, {Key: "b", Info: []byte("y")}}}
	if err := l.TrackAll(ctx, entries, ttl); err != nil {
		t.Fatal(err)
	}
	keys, err := c.Keys(ctx, prefix+":{room}:*").Result()
	if err != nil || len(keys) < 2 {
		t.Fatalf("the group's keys: %v, %v; want its presence hash and expiry set", keys, err)
	}
	for _, k := range keys {
		if p, err := c.PTTL(ctx, k).Result(); err != nil || p <= keep || p > 2*keep {
			t.Fatalf("PTTL of %s after the first write: %v, %v; want in (%v, %v]", k, p, err, keep, 2*keep)
		}
	}
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 { // refreshes
		if err := l.TrackAll(ctx, entries, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Track(ctx, "room", "c", []byte("z"), ttl); err != nil {
		t.Fatal(err)
	}
	if calls := commandCalls(t, c); calls["pexpire"] != 0 {
		t.Errorf("%d PEXPIRE calls in refreshes of keys with more than %v left, want none", calls["pexpire"], keep)
	}
	// Once less than keep is left, a write sets twice keep again.
	for _, k := range keys {
		if err := c.PExpire(ctx, k, keep/2).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.TrackAll(ctx, entries, ttl); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if p, err := c.PTTL(ctx, k).Result(); err != nil || p <= keep {
			t.Errorf("PTTL of %s after a write with %v left: %v, %v; want more than %v", k, keep/2, p, err, keep)
		}
	}
}

// TestRedisJoinsShareRoundTrips: the calls of many joins at once (each a
// Track and a history read) go together in the pipeline's round trips,
// not each on a pool connection of its own: 200 concurrent joins leave
// Redis with at most a few more connections, where each waited for one of
// the pool's (20 on 2 cores) before. After SCRIPT FLUSH a Track sends its
// script whole.
func TestRedisJoinsShareRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	l := newRedisLayer(t, srv.Addr(), newPrefix(), channellayer.RedisOptions{})
	c := newClient(t, srv.Addr())
	ctx := tctx(t, 30*time.Second)
	connected := func() int {
		t.Helper()
		n, err := c.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(n, "\n")
	}
	m, err := l.GroupSendRecorded(ctx, "room", mustMsg(t, "chat", map[string]string{"text": "hi"}))
	if err != nil {
		t.Fatal(err)
	}
	before := connected()
	const joins = 200
	var wg sync.WaitGroup
	errs := make(chan error, 2*joins)
	for i := range joins {
		wg.Go(func() {
			errs <- l.Track(ctx, "room", fmt.Sprintf("k%d", i), []byte("x"), time.Minute)
		})
		wg.Go(func() {
			got, err := l.Since(ctx, "room", m.ID)
			if err == nil && len(got) != 0 {
				err = fmt.Errorf("Since its only message: %d messages", len(got))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if added := connected() - before; added > 4 {
		t.Errorf("%d concurrent joins opened %d connections to Redis, want at most 4", joins, added)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Track(ctx, "room", "after-flush", []byte("x"), time.Minute); err != nil {
		t.Fatalf("Track after SCRIPT FLUSH: %v", err)
	}
	list, err := l.List(ctx, "room")
	if err != nil || len(list) != joins+1 {
		t.Fatalf("List: %d entries (%v), want %d", len(list), err, joins+1)
	}
}
