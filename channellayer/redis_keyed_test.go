package channellayer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// TestRedisRecordKeysBounded: the group's key hash never holds much more
// than the history, and takes the TTL of the history stream when it has one.
func TestRedisRecordKeysBounded(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		const size = 8
		prefix := newPrefix()
		l := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{HistorySize: size})
		c := newClient(t, s.addr)
		const g = "keys"
		hash, stream := prefix+":{"+g+"}:k", prefix+":{"+g+"}:h"
		for i := range 10 * size {
			if _, _, err := l.GroupSendRecordedOnce(tctx(t, 5*time.Second), g, fmt.Sprint("k", i), mustMsg(t, "chat", map[string]int{"n": i})); err != nil {
				t.Fatal(err)
			}
			n, err := c.HLen(tctx(t, 5*time.Second), hash).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n > 2*size {
				t.Fatalf("after %d keyed records the key hash holds %d keys, want at most %d", i+1, n, 2*size)
			}
		}
		if err := c.PExpire(tctx(t, 5*time.Second), stream, time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.GroupSendRecordedOnce(tctx(t, 5*time.Second), g, "last", mustMsg(t, "chat", nil)); err != nil {
			t.Fatal(err)
		}
		ttl, err := c.PTTL(tctx(t, 5*time.Second), hash).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl < 59*time.Minute || ttl > time.Hour {
			t.Fatalf("key hash TTL %v, want the stream's hour", ttl)
		}
	})
}
