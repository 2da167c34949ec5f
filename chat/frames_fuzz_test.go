package chat

import (
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Presence entries are read back from the layer (Redis), written by nodes
// of any version: whatever they hold, the users frame counts each session
// once, lists at most maxListed names in case-insensitive order, and only
// names of sessions that have an entry.
func FuzzRoomState(f *testing.F) {
	f.Add(`{"s":"a","n":"ann","at":1}`, `{"s":"b","n":"Bob","st":"grace","at":2}`, `{"s":"a","n":"ann","st":"drain"}`)
	f.Add(`{"s":"","n":"x"}`, `not json`, ``)
	f.Add(`{"s":"a","n":"z"}`, `{"s":"a","n":"A"}`, `{"s":1}`)
	f.Add(`{"S":"a","N":"ann"}`, `{"s":"b","n":"\u0000"}`, `[]`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		infos := []string{a, b, c, a}
		var members []channellayer.Member
		sessions := map[string]string{}
		for i, info := range infos {
			members = append(members, channellayer.Member{Key: strings.Repeat("k", i+1), Info: []byte(info)})
			if p, ok := decodeInfo([]byte(info)); ok {
				if p.Session == "" {
					t.Fatalf("decodeInfo(%q) accepted an entry without a session", info)
				}
				sessions[p.Session] = p.Name
			}
		}
		st := newRoomState(members)
		fr := st.frame("room")
		if fr.Type != "users" || fr.Room != "room" || fr.Count != len(sessions) || len(fr.Users) != min(len(sessions), maxListed) {
			t.Fatalf("entries %q: frame %+v, want %d sessions", infos, fr, len(sessions))
		}
		names := map[string]int{}
		for _, n := range sessions {
			names[n]++
		}
		for i, u := range fr.Users {
			if names[u.Name] == 0 {
				t.Fatalf("entries %q: frame lists %q, no session's name", infos, u.Name)
			}
			names[u.Name]--
			if i > 0 && strings.ToLower(fr.Users[i-1].Name) > strings.ToLower(u.Name) {
				t.Fatalf("entries %q: frame lists %q before %q", infos, fr.Users[i-1].Name, u.Name)
			}
		}
		for s := range sessions {
			if !st.live[s] && len(st.waiting[s]) == 0 {
				t.Fatalf("entries %q: session %q neither live nor waiting", infos, s)
			}
		}
	})
}
