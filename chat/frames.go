package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// Limits of the wire interface.
const (
	maxListed      = 100              // users listed in a users frame; notices only in rooms up to this size
	historyOnJoin  = 50               // messages in the first history frame
	olderPage      = 50               // messages in an older frame
	maxErrors      = 20               // error frames a connection may earn...
	errorWindow    = 10 * time.Second // ...within this window before it is closed with 1008
	frameReadLimit = 16 << 10
)

// Error codes of error frames.
const (
	codeBadJSON     = "bad_json"
	codeUnknownType = "unknown_type"
	codeBadText     = "bad_text"
	codeBadID       = "bad_id"
	codeRateLimited = "rate_limited"
	codeUnavailable = "unavailable"
)

// Layer event types. "message" and "notice" bodies are client frames as
// they are, sent on unchanged; "presence" says a room's online list changed.
const (
	eventMessage  = "message"
	eventNotice   = "notice"
	eventPresence = "presence"
	eventTyping   = "typing"
)

func now() string { return time.Now().UTC().Format(time.RFC3339) }

type errorFrame struct {
	Type string `json:"type"`
	Code string `json:"code"`
	Text string `json:"text"`
}

type historyFrame struct {
	Type     string            `json:"type"`
	Messages []json.RawMessage `json:"messages"`
	Reset    bool              `json:"reset,omitempty"`
}

// olderFrame answers an "older" request.
type olderFrame struct {
	Type     string            `json:"type"`
	Messages []json.RawMessage `json:"messages"`
	More     bool              `json:"more"`
}

func newHistoryFrame(msgs []channellayer.Message, reset bool) historyFrame {
	f := historyFrame{Type: "history", Messages: make([]json.RawMessage, 0, len(msgs)), Reset: reset}
	for _, m := range msgs {
		f.Messages = append(f.Messages, m.Body)
	}
	return f
}

func noticeEvent(text string) (channellayer.Message, error) {
	return channellayer.NewMessage(eventNotice, struct {
		Text string `json:"text"`
		Time string `json:"time"`
	}{text, now()})
}

// messageEvent is a chat message, as its frame: cid is the sender's
// client ID (omitted if empty), bot marks a message of the publish API.
func messageEvent(user, text, cid string, bot bool) (channellayer.Message, error) {
	return channellayer.NewMessage(eventMessage, struct {
		User string `json:"user"`
		Text string `json:"text"`
		Time string `json:"time"`
		CID  string `json:"cid,omitempty"`
		Bot  bool   `json:"bot,omitempty"`
	}{user, text, now(), cid, bot})
}

// typingEvent says that user is typing: the client frame
// {"type":"typing","user":...} with the sender's marker as a last field
// "from", which typingFrame takes off again.
func typingEvent(user, marker string) (channellayer.Message, error) {
	return channellayer.NewMessage(eventTyping, struct {
		User string `json:"user"`
		From string `json:"from"`
	}{user, marker})
}

// markerLen is the length of a socket's typing marker (hex).
const markerLen = 16

// newMarker returns a random typing marker.
func newMarker() string {
	var b [markerLen / 2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// typingFrame returns the client frame of a typing event's body (the body
// without its "from" field) and whether marker sent it; ok is false for a
// body not made by typingEvent.
func typingFrame(body []byte, marker string) (frame []byte, own, ok bool) {
	const from = `,"from":"`
	n := len(body) - len(from) - markerLen - len(`"}`)
	if n <= 0 || string(body[n:n+len(from)]) != from || string(body[len(body)-2:]) != `"}` {
		return nil, false, false
	}
	if string(body[n+len(from):len(body)-2]) == marker {
		return nil, true, true
	}
	return append(body[:n:n], '}'), false, true
}

// maxCID is the longest client ID of a message, in characters.
const maxCID = 64

// parseCID reads the optional "cid" of a message frame: absent is "", a
// string of 1 to 64 printable ASCII characters is itself, anything else
// is refused.
func parseCID(raw json.RawMessage) (string, bool) {
	if raw == nil {
		return "", true
	}
	var cid string
	if json.Unmarshal(raw, &cid) != nil || cid == "" || len(cid) > maxCID {
		return "", false
	}
	for i := 0; i < len(cid); i++ {
		if cid[i] < 0x20 || cid[i] > 0x7e {
			return "", false
		}
	}
	return cid, true
}

// recordKey is the layer's record key of a session's message cid: a hash,
// so that neither the session ID nor the cid is stored as such.
func recordKey(session, cid string) string {
	sum := sha256.Sum256([]byte(session + "\x00" + cid))
	return "cid:" + hex.EncodeToString(sum[:16])
}

// presenceInfo is what a connection's presence entry holds.
type presenceInfo struct {
	Session string `json:"s"`
	Name    string `json:"n"`
	// State is "" while connected, "grace" while a lost connection may
	// still come back (listed all the same). Nodes of earlier versions
	// wrote "drain" for sockets their shutdown closed: listed as well.
	State string `json:"st,omitempty"`
	// At is when the entry was last written, in Unix milliseconds.
	At int64 `json:"at"`
}

func decodeInfo(b []byte) (presenceInfo, bool) {
	var p presenceInfo
	return p, json.Unmarshal(b, &p) == nil && p.Session != ""
}

type userEntry struct {
	Name string `json:"name"`
}

type usersFrame struct {
	Type  string      `json:"type"`
	Room  string      `json:"room"`
	Count int         `json:"count"`
	Users []userEntry `json:"users"`
}

// roomState is a room's online list, computed from its presence entries.
type roomState struct {
	sessions map[string]string   // session → nickname, for every session with an entry
	live     map[string]bool     // sessions with a connected socket
	waiting  map[string][]string // session → keys of its entries in their grace period
}

func newRoomState(members []channellayer.Member) roomState {
	s := roomState{
		sessions: make(map[string]string),
		live:     make(map[string]bool),
		waiting:  make(map[string][]string),
	}
	for _, m := range members {
		p, ok := decodeInfo(m.Info)
		if !ok {
			continue
		}
		s.sessions[p.Session] = p.Name
		if p.State == "" {
			s.live[p.Session] = true
		} else {
			s.waiting[p.Session] = append(s.waiting[p.Session], m.Key)
		}
	}
	return s
}

func (s roomState) frame(room string) usersFrame {
	type entry struct{ name, session string }
	all := make([]entry, 0, len(s.sessions))
	for sess, name := range s.sessions {
		all = append(all, entry{name, sess})
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := strings.ToLower(all[i].name), strings.ToLower(all[j].name)
		if a != b {
			return a < b
		}
		if all[i].name != all[j].name {
			return all[i].name < all[j].name
		}
		return all[i].session < all[j].session
	})
	f := usersFrame{Type: "users", Room: room, Count: len(all), Users: make([]userEntry, 0, min(len(all), maxListed))}
	for i := 0; i < len(all) && i < maxListed; i++ {
		f.Users = append(f.Users, userEntry{all[i].name})
	}
	return f
}
