package channellayer_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recentTypes returns the types of a group's recent messages.
func recentTypes(t testing.TB, h channellayer.History, group string) []string {
	t.Helper()
	ms, err := h.Recent(tctx(t, 5*time.Second), group, 10)
	if err != nil {
		t.Fatalf("Recent: %v", err)
	}
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Type
	}
	return out
}

// The memory layer forgets a group's history once it has had no message
// for GroupTTL; every message keeps it for another GroupTTL.
func TestMemoryGroupTTL(t *testing.T) {
	m, err := channellayer.NewMemory(channellayer.MemoryOptions{GroupTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Now()}
	m.SetClock(clock.Now)
	ctx := tctx(t, 5*time.Second)
	a, err := m.GroupSendRecorded(ctx, "g", mustMsg(t, "a", nil))
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(59 * time.Minute)
	b, err := m.GroupSendRecorded(ctx, "g", mustMsg(t, "b", nil))
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(59 * time.Minute) // 118 min after a, 59 after b
	if got := recentTypes(t, m, "g"); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("59 min after the last message: %v, want [a b]", got)
	}
	if ms, err := m.Since(ctx, "g", a.ID); err != nil || len(ms) != 1 {
		t.Fatalf("Since(a) = %v, %v; want [b]", ms, err)
	}
	clock.Add(time.Minute) // an hour after b
	if got := recentTypes(t, m, "g"); len(got) != 0 {
		t.Fatalf("an hour after the last message: %v, want nothing", got)
	}
	if _, err := m.Since(ctx, "g", b.ID); !errors.Is(err, channellayer.ErrUnknownID) {
		t.Fatalf("Since(b) an hour after it: %v, want ErrUnknownID", err)
	}
	// Another group's record sweeps the idle one away; the group starts over.
	if _, err := m.GroupSendRecorded(ctx, "other", mustMsg(t, "x", nil)); err != nil {
		t.Fatal(err)
	}
	c, err := m.GroupSendRecorded(ctx, "g", mustMsg(t, "c", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := recentTypes(t, m, "g"); fmt.Sprint(got) != "[c]" {
		t.Fatalf("after a new message: %v, want [c]", got)
	}
	if channellayer.CompareID(c.ID, b.ID) <= 0 {
		t.Errorf("ID %s after the history was forgotten is not after %s", c.ID, b.ID)
	}
}

// The Redis layer sets a group's history stream to expire GroupTTL after
// each record (PEXPIRE in the record scripts), keyed records
// (GroupSendRecordedOnce) included, which set their key hash to expire
// with it: on miniredis (moved in time with FastForward) and on a real
// redis-server.
func TestRedisGroupTTL(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		for _, keyed := range []bool{false, true} {
			t.Run(fmt.Sprint("keyed=", keyed), func(t *testing.T) {
				const ttl = 2 * time.Second
				prefix := newPrefix()
				l := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{GroupTTL: ttl})
				c := newClient(t, s.addr)
				keys := []string{prefix + ":{g}:h"}
				if keyed {
					keys = append(keys, prefix+":{g}:k")
				}
				ctx := tctx(t, 10*time.Second)
				n := 0
				record := func(typ string) {
					t.Helper()
					n++
					var err error
					if keyed {
						_, _, err = l.GroupSendRecordedOnce(ctx, "g", fmt.Sprint("key-", n), mustMsg(t, typ, nil))
					} else {
						_, err = l.GroupSendRecorded(ctx, "g", mustMsg(t, typ, nil))
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				// A stream without a TTL (as a layer without GroupTTL left
				// it) takes one at the next record.
				if err := c.XAdd(ctx, &redis.XAddArgs{Stream: keys[0], Values: []any{"t", "old", "d", `{"type":"old"}`}}).Err(); err != nil {
					t.Fatal(err)
				}
				record("a")
				for _, key := range keys {
					if p, err := c.PTTL(ctx, key).Result(); err != nil || p <= 0 || p > ttl {
						t.Fatalf("PTTL of %s after a record: %v, %v; want (0, %v]", key, p, err, ttl)
					}
				}
				if s.mini != nil {
					s.mini.FastForward(ttl - 100*time.Millisecond)
					record("b")
					s.mini.FastForward(ttl - 100*time.Millisecond) // kept: b renewed it
					if got := recentTypes(t, l, "g"); fmt.Sprint(got) != "[old a b]" {
						t.Fatalf("within the TTL of the last record: %v, want [old a b]", got)
					}
					s.mini.FastForward(200 * time.Millisecond)
				}
				testkit.EventuallyNil(t, 5*time.Second, func() error {
					if got := recentTypes(t, l, "g"); len(got) != 0 {
						return fmt.Errorf("history %v", got)
					}
					for _, key := range keys {
						if n, err := c.Exists(ctx, key).Result(); err != nil || n != 0 {
							return fmt.Errorf("%s: exists %d, %v", key, n, err)
						}
					}
					return nil
				}, "the history expires")
			})
		}
	})
}
