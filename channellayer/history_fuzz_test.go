package channellayer_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// A client's "since" is any string. Every backend answers it the same
// way: the messages after it when it is exactly the ID of a message still
// kept, else ErrUnknownID (so that the chat falls back to the latest
// messages); never another error, whatever Redis makes of the string.
func FuzzSince(f *testing.F) {
	for _, s := range []string{
		"", "-", "1-0", "0-0", "01-1", "1-01", "+1-1", "1-1-1", "18446744073709551615-18446744073709551615",
		"00000000000000000000000000001-1", "99999999999999999999-0", "1", "$", "+", "-", ">", "(1-1", "1-*", "*",
	} {
		f.Add(s, -1)
		f.Add(s, 1)
	}
	mini := miniredis.RunT(f)
	real := redistest.Start(f)
	backends := map[string]channellayer.History{}
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{HistorySize: 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close(context.Background()) })
	backends["memory"] = mem
	backends["miniredis"] = openRedisLayer(f, newClient(f, mini.Addr()), newPrefix(), channellayer.RedisOptions{HistorySize: 16}, 5*time.Second)
	backends["redis-server"] = openRedisLayer(f, newClient(f, real.Addr()), newPrefix(), channellayer.RedisOptions{HistorySize: 16}, 5*time.Second)
	ids := map[string][]string{}
	for name, h := range backends {
		for i := range 3 {
			m, err := h.GroupSendRecorded(tctx(f, 5*time.Second), "g", mustMsg(f, "chat", map[string]int{"n": i}))
			if err != nil {
				f.Fatalf("%s: recording: %v", name, err)
			}
			ids[name] = append(ids[name], m.ID)
		}
	}
	f.Fuzz(func(t *testing.T, since string, pick int) {
		for name, h := range backends {
			recorded := ids[name]
			tries := []string{since}
			if pick >= 0 && pick < len(recorded) { // beside a real ID
				id := recorded[pick]
				tries = append(tries, id, since+id, id+since, "0"+id)
			}
			for _, s := range tries {
				got, err := h.Since(tctx(t, 5*time.Second), "g", s)
				k := slices.Index(recorded, s)
				if k < 0 {
					if !errors.Is(err, channellayer.ErrUnknownID) {
						t.Fatalf("%s: Since(%q) = %d messages, %v; want ErrUnknownID", name, s, len(got), err)
					}
					continue
				}
				var gotIDs []string
				for _, m := range got {
					gotIDs = append(gotIDs, m.ID)
				}
				if err != nil || !slices.Equal(gotIDs, recorded[k+1:]) {
					t.Fatalf("%s: Since(%q) = %v, %v; want %v", name, s, gotIDs, err, recorded[k+1:])
				}
			}
		}
	})
}
