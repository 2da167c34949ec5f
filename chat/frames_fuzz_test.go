package chat

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/presence"
)

// Presence metas are read back from the layer (Redis), written by nodes of
// any version: whatever they hold, the users frame counts each session with
// a name once, lists at most maxListed names in case-insensitive order, and
// only names that some session has.
func FuzzUsersFrame(f *testing.F) {
	f.Add(`{"n":"ann"}`, `{"n":"Bob"}`, `{"n":"ann"}`)
	f.Add(`{"n":""}`, `not json`, ``)
	f.Add(`{"n":"z"}`, `{"n":"A"}`, `{"n":1}`)
	f.Add(`{"N":"ann"}`, `{"n":"\u0000"}`, `[]`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		metas := []string{a, b, c, a}
		var who []presence.Presence
		names := map[string]int{}
		count := 0
		for i, m := range metas {
			who = append(who, presence.Presence{Key: strings.Repeat("k", i+1), Metas: []json.RawMessage{json.RawMessage(m)}})
			var meta userMeta
			if json.Unmarshal([]byte(m), &meta) == nil && meta.Name != "" {
				names[meta.Name]++
				count++
			}
		}
		fr := newUsersFrame("room", who)
		if fr.Type != "users" || fr.Room != "room" || fr.Count != count || len(fr.Users) != min(count, maxListed) {
			t.Fatalf("metas %q: frame %+v, want %d sessions", metas, fr, count)
		}
		for i, u := range fr.Users {
			if names[u.Name] == 0 {
				t.Fatalf("metas %q: frame lists %q, no session's name", metas, u.Name)
			}
			names[u.Name]--
			if i > 0 && strings.ToLower(fr.Users[i-1].Name) > strings.ToLower(u.Name) {
				t.Fatalf("metas %q: frame lists %q before %q", metas, fr.Users[i-1].Name, u.Name)
			}
		}
	})
}
