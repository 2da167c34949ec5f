package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/consumertest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// flakyLayer is a memory layer whose recorded sends fail while down is set,
// as if Redis were unreachable. Like the Redis layer, it answers
// GroupSendRecordedAsync later, on another goroutine, in call order; while
// hold is set those answers wait for it to close.
type flakyLayer struct {
	*channellayer.Memory
	down  atomic.Bool
	calls atomic.Int64 // GroupSendRecordedAsync calls

	mu   sync.Mutex
	prev chan struct{} // closed when the last async send is done
	hold chan struct{}
}

func (f *flakyLayer) GroupSendRecordedAsync(g string, m channellayer.Message, done func(channellayer.Message, error)) {
	f.calls.Add(1)
	f.mu.Lock()
	prev, next, hold := f.prev, make(chan struct{}), f.hold
	f.prev = next
	f.mu.Unlock()
	go func() {
		defer close(next)
		if prev != nil {
			<-prev
		}
		if hold != nil {
			<-hold
		}
		time.Sleep(time.Millisecond) // a round trip: the fake's latency
		done(f.GroupSendRecorded(context.Background(), g, m))
	}()
}

func (f *flakyLayer) GroupSendRecorded(ctx context.Context, g string, m channellayer.Message) (channellayer.Message, error) {
	if f.down.Load() {
		return channellayer.Message{}, fmt.Errorf("redis: connection refused: %w", channellayer.ErrUnavailable)
	}
	return f.Memory.GroupSendRecorded(ctx, g, m)
}

func (f *flakyLayer) GroupSendRecordedOnce(ctx context.Context, g, key string, m channellayer.Message) (channellayer.Message, bool, error) {
	if f.down.Load() {
		return channellayer.Message{}, false, fmt.Errorf("redis: connection refused: %w", channellayer.ErrUnavailable)
	}
	return f.Memory.GroupSendRecordedOnce(ctx, g, key, m)
}

// lateLayer is a memory layer that delivers group sends a little later,
// in order, from a goroutine of its own, as Redis's pub/sub does.
type lateLayer struct {
	*channellayer.Memory
	q chan lateSend
}

type lateSend struct {
	g string
	m channellayer.Message
}

func newLateLayer(t *testing.T, delay time.Duration) *lateLayer {
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := &lateLayer{Memory: mem, q: make(chan lateSend, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range l.q {
			time.Sleep(delay) // the fake's latency
			l.Memory.GroupSend(context.Background(), s.g, s.m)
		}
	}()
	t.Cleanup(func() {
		close(l.q)
		<-done
		mem.Close(context.Background())
	})
	return l
}

func (l *lateLayer) GroupSend(ctx context.Context, g string, m channellayer.Message) error {
	select {
	case l.q <- lateSend{g, m}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// holdLayer is a memory layer that holds the next Track of a live entry
// of one session (a refresh, once the session has joined) until release
// is closed, and closes entered when it starts holding.
type holdLayer struct {
	*channellayer.Memory
	session          atomic.Value // string; "" holds nothing
	entered, release chan struct{}
}

func (l *holdLayer) Track(ctx context.Context, group, key string, info []byte, ttl time.Duration) error {
	l.hold([]channellayer.Member{{Key: key, Info: info}})
	return l.Memory.Track(ctx, group, key, info, ttl)
}

// TrackAll is how the framework refreshes entries.
func (l *holdLayer) TrackAll(ctx context.Context, groups map[string][]channellayer.Member, ttl time.Duration) error {
	for _, entries := range groups {
		l.hold(entries)
	}
	return l.Memory.TrackAll(ctx, groups, ttl)
}

func (l *holdLayer) hold(entries []channellayer.Member) {
	s, _ := l.session.Load().(string)
	if s == "" {
		return
	}
	for _, e := range entries {
		if session, grace := entrySession(e.Info); session == s && !grace && l.session.CompareAndSwap(s, "") {
			close(l.entered)
			<-l.release
			return
		}
	}
}

// entrySession reads the session (the key) of a presence entry the
// framework wrote, and whether it waits out a grace period.
func entrySession(info []byte) (session string, grace bool) {
	var e struct {
		K string `json:"k"`
		G bool   `json:"g"`
	}
	_ = json.Unmarshal(info, &e)
	return e.K, e.G
}

type testNode struct {
	app   *App
	layer channellayer.Layer
}

func newNode(t *testing.T, layer channellayer.Layer, mod func(*Config)) *testNode {
	t.Helper()
	if layer == nil {
		mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Close(context.Background()) })
		layer = &flakyLayer{Memory: mem}
	}
	cfg := Config{
		Layer:         layer,
		Secret:        []byte("0123456789abcdef0123456789abcdef"),
		UsersInterval: 20 * time.Millisecond,
		Grace:         300 * time.Millisecond,
		PresenceTTL:   time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	app, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		app.Shutdown(ctx)
	})
	return &testNode{app: app, layer: layer}
}

// client is one chat socket driven through consumertest.
type client struct {
	t   *testing.T
	com *consumertest.Communicator
}

func (n *testNode) join(t *testing.T, nick, session, room, since string) *client {
	t.Helper()
	c := n.dial(t, nick, session, room, since)
	if err := c.com.Connect(ctxT(t)); err != nil {
		t.Fatalf("%s joining %q: %v", nick, room, err)
	}
	return c
}

func (n *testNode) dial(t *testing.T, nick, session, room, since string) *client {
	scope := consumer.Scope{
		Path:   "/ws/chat/" + room + "/",
		Params: []consumer.Param{{Name: "room", Value: room}},
		Query:  map[string][]string{},
		User:   &consumer.User{Name: nick, Session: session},
	}
	if since != "" {
		scope.Query.Set("since", since)
	}
	com := consumertest.New(t, n.app.newConsumer, consumertest.Options{
		Layer: n.layer, Scope: scope, Server: n.app.server,
	})
	return &client{t: t, com: com}
}

func ctxT(t *testing.T) context.Context { return testkit.ContextWithin(t, 10*time.Second) }

type frame struct {
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	User     string            `json:"user"`
	Text     string            `json:"text"`
	Time     string            `json:"time"`
	Code     string            `json:"code"`
	Room     string            `json:"room"`
	Count    int               `json:"count"`
	Users    []userEntry       `json:"users"`
	Messages []json.RawMessage `json:"messages"`
	Reset    bool              `json:"reset"`
	CID      string            `json:"cid"`
	Bot      bool              `json:"bot"`
	More     bool              `json:"more"`
}

func (c *client) next() frame {
	c.t.Helper()
	b, err := c.com.Receive(ctxT(c.t))
	if err != nil {
		c.t.Fatalf("receiving: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// await skips frames until one of type typ (and text, if given) arrives.
func (c *client) await(typ, text string) frame {
	c.t.Helper()
	for {
		f := c.next()
		if f.Type == typ && (text == "" || f.Text == text) {
			return f
		}
	}
}

// awaitUsers skips frames until a users frame with the given names arrives.
func (c *client) awaitUsers(names ...string) frame {
	c.t.Helper()
	want := strings.Join(names, ",")
	for {
		f := c.await("users", "")
		if got := userNames(f); got == want {
			return f
		}
	}
}

// awaitNoticeAndUsers skips frames until both the notice text and a
// users frame with the given names have arrived, in either order: the hub's
// flush may send the frame before this socket's handler sends the notice
// of the same diff (any socket's handler marks the room for the flush).
func (c *client) awaitNoticeAndUsers(text string, names ...string) {
	c.t.Helper()
	want := strings.Join(names, ",")
	var notice, users bool
	for !notice || !users {
		f := c.next()
		notice = notice || f.Type == "notice" && f.Text == text
		users = users || f.Type == "users" && userNames(f) == want
	}
}

func userNames(f frame) string {
	var s []string
	for _, u := range f.Users {
		s = append(s, u.Name)
	}
	return strings.Join(s, ",")
}

// quiet asserts that no frame of type typ with text arrives within d.
func (c *client) quiet(typ, text string, d time.Duration) {
	c.t.Helper()
	c.during(d, func(f frame, b []byte) {
		if f.Type == typ && (text == "" || f.Text == text) {
			c.t.Fatalf("unexpected %s frame %s", typ, b)
		}
	})
}

// keepsUsers asserts that for d no notice arrives and every users frame
// lists exactly names.
func (c *client) keepsUsers(d time.Duration, names ...string) {
	c.t.Helper()
	want := strings.Join(names, ",")
	c.during(d, func(f frame, b []byte) {
		if f.Type == "notice" || (f.Type == "users" && userNames(f) != want) {
			c.t.Fatalf("unexpected frame %s while the list should stay %s", b, want)
		}
	})
}

// during hands check every frame that arrives within d.
func (c *client) during(d time.Duration, check func(f frame, b []byte)) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		none, b := c.com.ReceiveNothing(left)
		if none {
			return
		}
		var f frame
		json.Unmarshal(b, &f)
		check(f, b)
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	if err := c.com.SendJSON(ctxT(c.t), v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) say(text string) {
	c.send(map[string]string{"type": "message", "text": text})
}

func (c *client) closed() consumer.StatusCode {
	c.t.Helper()
	code, err := c.com.Closed(ctxT(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	return code
}

// joinFrames checks the joiner's first frames: history, users, welcome.
func (c *client) joinFrames(users ...string) frame {
	c.t.Helper()
	h := c.next()
	if h.Type != "history" {
		c.t.Fatalf("first frame is %q, want history", h.Type)
	}
	u := c.next()
	if u.Type != "users" || userNames(u) != strings.Join(users, ",") || u.Count != len(users) {
		c.t.Fatalf("second frame %+v, want users %v", u, users)
	}
	w := c.next()
	if w.Type != "notice" || w.Text != "Welcome to ChatterPro!" {
		c.t.Fatalf("third frame %+v, want the welcome notice", w)
	}
	return h
}

func TestJoinAndChat(t *testing.T) {
	n := newNode(t, nil, nil)
	ann := n.join(t, "ann", "s-ann", "Chat Room", "")
	ann.joinFrames("ann")
	bob := n.join(t, "Bob", "s-bob", "Chat Room", "")
	bob.joinFrames("ann", "Bob")
	ann.awaitNoticeAndUsers("Bob has joined the chat", "ann", "Bob")

	bob.say("  hello <img src=x onerror=alert(1)>  ")
	for _, c := range []*client{ann, bob} {
		m := c.await("message", "")
		if m.User != "Bob" || m.Text != "hello <img src=x onerror=alert(1)>" || m.ID == "" {
			t.Fatalf("message frame %+v", m)
		}
		if _, err := time.Parse(time.RFC3339, m.Time); err != nil || !strings.HasSuffix(m.Time, "Z") {
			t.Fatalf("time %q is not RFC 3339 UTC", m.Time)
		}
	}
	// Another room hears nothing of it.
	cid := n.join(t, "cid", "s-cid", "Gaming Room", "")
	cid.joinFrames("cid")
	bob.say("only chat room")
	ann.await("message", "only chat room")
	cid.quiet("message", "", 100*time.Millisecond)
}

func TestUsersSortedAndOnePerSession(t *testing.T) {
	n := newNode(t, nil, nil)
	z := n.join(t, "zed", "s1", "r", "")
	z.joinFrames("zed")
	n.join(t, "Amy", "s2", "r", "").joinFrames("Amy", "zed")
	tab2 := n.join(t, "zed", "s1", "r", "") // a second tab: same session
	tab2.joinFrames("Amy", "zed")
	n.join(t, "bea", "s3", "r", "").joinFrames("Amy", "bea", "zed")
	z.awaitUsers("Amy", "bea", "zed")
	z.quiet("notice", "zed has joined the chat", 100*time.Millisecond)
}

func TestErrorFrames(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	cases := []struct {
		name string
		send string
		code string
	}{
		{"not JSON", `hello`, codeBadJSON},
		{"not an object", `[1,2]`, codeBadJSON},
		{"no type", `{"text":"x"}`, codeBadJSON},
		{"unknown type", `{"type":"shout","text":"x"}`, codeUnknownType},
		{"empty text", `{"type":"message","text":""}`, codeBadText},
		{"blank text", `{"type":"message","text":"  \n "}`, codeBadText},
		{"no text", `{"type":"message"}`, codeBadText},
		{"2001 characters", `{"type":"message","text":"` + strings.Repeat("é", 2001) + `"}`, codeBadText},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.com.SendText(ctxT(t), tc.send)
			f := c.await("error", "")
			if f.Code != tc.code || f.Text == "" {
				t.Fatalf("error frame %+v, want code %s with a text", f, tc.code)
			}
		})
	}
	// 2000 characters (multi-byte) are fine, and the connection is still open.
	long := strings.Repeat("é", 2000)
	c.say(long)
	if m := c.await("message", ""); m.Text != long {
		t.Fatalf("2000-character message came back as %d characters", len([]rune(m.Text)))
	}
}

func TestUnavailable(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	n.layer.(*flakyLayer).down.Store(true)
	c.say("lost?")
	if f := c.await("error", ""); f.Code != codeUnavailable {
		t.Fatalf("got %+v, want unavailable", f)
	}
	n.layer.(*flakyLayer).down.Store(false)
	c.say("back")
	c.await("message", "back")
}

// An answer to a frame (here an error) leaves only after the socket's
// earlier messages are recorded, though the layer records them while the
// socket's reader goes on: answers keep the order of the frames.
func TestAnswerAfterEarlierMessagesRecorded(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	const sent = 5
	for i := range sent {
		c.say(fmt.Sprint(i))
	}
	c.send(map[string]string{"type": "nope"})
	c.await("error", "")
	recent, err := n.layer.(*flakyLayer).Recent(ctxT(t), "r", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != sent {
		t.Fatalf("the unknown_type answer came with %d of the %d earlier messages recorded", len(recent), sent)
	}
}

// A socket has at most maxInFlight messages waiting for the layer; its
// reader takes the next frame when one of them is recorded. None is lost.
func TestInFlightBounded(t *testing.T) {
	n := newNode(t, nil, nil)
	f := n.layer.(*flakyLayer)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	hold := make(chan struct{})
	f.mu.Lock()
	f.hold = hold
	f.mu.Unlock()
	const sent = maxInFlight + 8
	for i := range sent {
		c.say(fmt.Sprint(i))
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return f.calls.Load() >= maxInFlight }, "the first messages handed to the layer")
	// The reader waits for a slot: it takes no more until one is recorded.
	testkit.Eventually(t, 5*time.Second, func() bool { return testkit.BlockedIn("chat.(*inflight).waitBelow") }, "the reader waiting for a slot")
	if got := f.calls.Load(); got != maxInFlight {
		t.Fatalf("%d messages handed to the layer while it held them all, want %d", got, maxInFlight)
	}
	close(hold)
	for i := range sent {
		c.await("message", fmt.Sprint(i))
	}
}

func TestRateLimit(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.Rate = 2 }) // burst 4
	clk := testkit.NewClock(time.Now())
	n.app.clock = clk
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	for i := 0; i < 5; i++ {
		c.say(fmt.Sprint(i))
	}
	// Error frames go straight out, messages round the layer: any order.
	var msgs, limited int
	for msgs+limited < 5 {
		switch f := c.next(); f.Type {
		case "message":
			msgs++
		case "error":
			if f.Code != codeRateLimited {
				t.Fatalf("got %+v, want rate_limited", f)
			}
			limited++
		}
	}
	if msgs != 4 || limited != 1 {
		t.Fatalf("%d messages went out and %d were limited, want 4 and 1", msgs, limited)
	}
	clk.Advance(600 * time.Millisecond) // one token back
	c.say("later")
	c.await("message", "later")
}

func TestTooManyErrorsIs1008(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	for i := 0; i < 21; i++ {
		c.com.SendText(ctxT(t), "nope")
	}
	if code := c.closed(); code != consumer.StatusPolicy {
		t.Fatalf("closed with %d, want 1008", code)
	}
}

func TestFrameTooBigIs1009(t *testing.T) {
	n := newNode(t, nil, nil)
	c := n.join(t, "ann", "s", "r", "")
	c.joinFrames("ann")
	c.com.SendText(ctxT(t), `{"type":"message","text":"`+strings.Repeat("x", 17<<10)+`"}`)
	if code := c.closed(); code != consumer.StatusTooBig {
		t.Fatalf("closed with %d, want 1009", code)
	}
}

func TestRefusals(t *testing.T) {
	n := newNode(t, nil, nil)
	for _, room := range []string{"a/b", "", strings.Repeat("r", 65), "bad\x00room"} {
		c := n.dial(t, "ann", "s", room, "")
		var refuse *consumer.RefuseError
		if err := c.com.Connect(ctxT(t)); !errors.As(err, &refuse) || refuse.Status != 400 {
			t.Errorf("room %q: %v, want 400", room, err)
		}
	}
}

func TestHistoryAndResume(t *testing.T) {
	n := newNode(t, nil, nil)
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	var ids []string
	for i := 0; i < 60; i++ {
		a.say(fmt.Sprint("m", i))
		ids = append(ids, a.await("message", fmt.Sprint("m", i)).ID)
	}
	// A newcomer gets the last 50.
	b := n.join(t, "bob", "s2", "r", "")
	h := b.joinFrames("ann", "bob")
	if len(h.Messages) != 50 || h.Reset {
		t.Fatalf("history has %d messages (reset %v), want 50", len(h.Messages), h.Reset)
	}
	var first frame
	json.Unmarshal(h.Messages[0], &first)
	if first.Text != "m10" || first.ID != ids[10] {
		t.Fatalf("history starts at %+v, want m10", first)
	}
	// A reconnect with since gets exactly what came after it.
	r := n.join(t, "bob", "s2", "r", ids[55])
	h = r.joinFrames("ann", "bob")
	if len(h.Messages) != 4 || h.Reset {
		t.Fatalf("resume got %d messages (reset %v), want 4", len(h.Messages), h.Reset)
	}
	// Malformed, unknown, and trimmed IDs reset.
	for _, since := range []string{"garbage", "99999999999999-0", "1-0"} {
		c := n.join(t, "cid", "s3", "r", since)
		h := c.joinFrames("ann", "bob", "cid")
		if !h.Reset || len(h.Messages) != 50 {
			t.Fatalf("since %q: reset %v with %d messages, want reset with 50", since, h.Reset, len(h.Messages))
		}
	}
}

func TestResumeDoesNotRepeat(t *testing.T) {
	n := newNode(t, nil, nil)
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	a.say("first")
	id := a.await("message", "first").ID
	// Messages keep flowing while bob resumes: none may come twice.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 30; i++ {
			m, _ := messageEvent("ann", fmt.Sprint("flow", i), "", false)
			n.app.history.GroupSendRecorded(context.Background(), "r", m)
		}
	}()
	b := n.join(t, "bob", "s2", "r", id)
	seen := map[string]bool{}
	h := b.next()
	for _, raw := range h.Messages {
		var m frame
		json.Unmarshal(raw, &m)
		seen[m.Text] = true
	}
	<-done
	for len(seen) < 30 {
		f := b.next()
		if f.Type != "message" {
			continue
		}
		if seen[f.Text] {
			t.Fatalf("%q came twice", f.Text)
		}
		seen[f.Text] = true
	}
	b.quiet("message", "", 100*time.Millisecond)
}

func TestLeaveAndGrace(t *testing.T) {
	n := newNode(t, nil, nil) // grace 300 ms
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")

	// Leave (client closes with 1000): announced at once.
	b := n.join(t, "bob", "s2", "r", "")
	b.joinFrames("ann", "bob")
	a.await("notice", "bob has joined the chat")
	start := time.Now()
	b.com.Disconnect(ctxT(t), consumer.StatusNormal)
	a.awaitNoticeAndUsers("bob has left the chat", "ann")
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("leave took %v, must not wait for the grace period", d)
	}

	// Lost connection, back within the grace period: nothing announced.
	c := n.join(t, "cid", "s3", "r", "")
	c.joinFrames("ann", "cid")
	a.await("notice", "cid has joined the chat")
	c.com.Disconnect(ctxT(t), consumer.StatusAbnormal)
	c2 := n.join(t, "cid", "s3", "r", "")
	c2.joinFrames("ann", "cid")
	a.quiet("notice", "", 700*time.Millisecond)

	// Lost and not back: announced after the grace period.
	start = time.Now()
	c2.com.Disconnect(ctxT(t), consumer.StatusGoingAway)
	a.await("notice", "cid has left the chat")
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("departure announced after %v, before the grace period", d)
	}
	a.awaitUsers("ann")
}

func TestBigRoomHasNoNotices(t *testing.T) {
	n := newNode(t, nil, nil)
	watcher := n.join(t, "aaa", "s-watch", "big", "")
	watcher.joinFrames("aaa")
	for i := 0; i < 100; i++ {
		n.join(t, fmt.Sprintf("u%03d", i), fmt.Sprint("s", i), "big", "")
	}
	// The 100th user (count 100 after the change) is announced; the 101st is
	// not. The users frame of 101 may come before that notice or after it
	// (joins close together go out as one change).
	var announced bool
	var f frame
	for !announced || f.Count != 101 {
		switch g := watcher.next(); {
		case g.Type == "notice" && g.Text == "u098 has joined the chat":
			announced = true
		case g.Type == "users":
			f = g
		}
	}
	if len(f.Users) != 100 || f.Users[0].Name != "aaa" {
		t.Fatalf("users frame lists %d users starting %v, want the first 100 by name", len(f.Users), f.Users[:1])
	}
	watcher.quiet("notice", "u099 has joined the chat", 100*time.Millisecond)
}

// On a layer that delivers group sends later, as Redis does, the joiner
// is in the group by the time its own "has joined" arrives: it gets the
// welcome instead, and the others' notices as before.
func TestJoinerNotToldOfItsOwnJoin(t *testing.T) {
	n := newNode(t, newLateLayer(t, 20*time.Millisecond), nil)
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	b := n.join(t, "bob", "s2", "r", "")
	b.joinFrames("ann", "bob")
	a.await("notice", "bob has joined the chat")
	b.quiet("notice", "bob has joined the chat", 200*time.Millisecond)
	c := n.join(t, "cid", "s3", "r", "")
	c.joinFrames("ann", "bob", "cid")
	b.await("notice", "cid has joined the chat")
	a.await("notice", "cid has joined the chat")
	c.quiet("notice", "cid has joined the chat", 200*time.Millisecond)
}

// A presence refresh that took a member before it left must not write its
// entry back after the leave: the leaver would be listed again, and "has
// left" announced a second time when that entry expired.
func TestRefreshDoesNotUndoLeave(t *testing.T) {
	mem, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { mem.Close(context.Background()) })
	l := &holdLayer{Memory: mem, entered: make(chan struct{}), release: make(chan struct{})}
	n := newNode(t, l, func(c *Config) { c.PresenceTTL = 300 * time.Millisecond }) // refresh every 100 ms
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	b := n.join(t, "bob", "s2", "r", "")
	b.joinFrames("ann", "bob")
	l.session.Store("s2")
	select {
	case <-l.entered: // a refresh of bob's entry is under way
	case <-time.After(5 * time.Second):
		t.Fatal("no presence refresh of bob within 5 s")
	}
	left := make(chan error, 1)
	go func() { left <- b.com.Disconnect(ctxT(t), consumer.StatusNormal) }()
	// The leave reaches bob's entry while the refresh holds it (or, were
	// they not ordered, is done already).
	testkit.Eventually(t, 5*time.Second, func() bool {
		for _, g := range testkit.Goroutines() {
			if g.In("presence.(*Tracker).Leave") && g.LockWait() {
				return true
			}
		}
		return len(left) > 0
	}, "the leave reaching bob's entry during the refresh")
	close(l.release)
	if err := <-left; err != nil {
		t.Fatal(err)
	}
	members, err := mem.List(ctxT(t), "r")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if session, _ := entrySession(m.Info); session == "s2" {
			t.Fatalf("bob is listed again after leaving: %s", m.Info)
		}
	}
	a.await("notice", "bob has left the chat")
}

func TestTwoNodesAndDrain(t *testing.T) {
	mem, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	t.Cleanup(func() { mem.Close(context.Background()) })
	n1 := newNode(t, mem, nil)
	n2 := newNode(t, mem, func(c *Config) { c.Grace = 2 * time.Second })
	a := n1.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	b := n2.join(t, "bob", "s2", "r", "")
	b.joinFrames("ann", "bob")
	a.await("notice", "bob has joined the chat")
	b.say("cross")
	a.await("message", "cross")

	// Node 2 drains: bob gets 1012 and, like any loss but a leave, stays on
	// ann's list for the grace period: no users frame, no notice. Back (on
	// node 1) within it, he is not announced at all.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n2.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code := b.closed(); code != consumer.StatusServiceRestart {
		t.Fatalf("closed with %d, want 1012", code)
	}
	a.keepsUsers(300*time.Millisecond, "ann", "bob")
	b2 := n1.join(t, "bob", "s2", "r", "")
	b2.joinFrames("ann", "bob")
	a.keepsUsers(2500*time.Millisecond, "ann", "bob") // past node 2's grace of 2 s

	// A drained session that does not come back is announced once its
	// grace period is over, by a node that is still up.
	n3 := newNode(t, mem, func(c *Config) { c.Grace = time.Second })
	c := n3.join(t, "cid", "s3", "r", "")
	c.joinFrames("ann", "bob", "cid")
	a.await("notice", "cid has joined the chat")
	start := time.Now() // before the grace entry is written, inside Shutdown
	if err := n3.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a.await("notice", "cid has left the chat")
	if d := time.Since(start); d < 950*time.Millisecond {
		t.Fatalf("drained session announced after %v, before its grace period of 1 s", d)
	}
	a.awaitUsers("ann", "bob")
}

// A session that lost its socket, came back within the grace period, and
// then leaves with 1000 is gone at once: its waiting entry goes too.
func TestLeaveAfterResumeIsImmediate(t *testing.T) {
	n := newNode(t, nil, func(c *Config) { c.Grace = 5 * time.Second })
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	b := n.join(t, "bob", "s2", "r", "")
	b.joinFrames("ann", "bob")
	a.await("notice", "bob has joined the chat")
	b.com.Disconnect(ctxT(t), consumer.StatusAbnormal) // lost
	b2 := n.join(t, "bob", "s2", "r", "")
	b2.joinFrames("ann", "bob")
	start := time.Now()
	b2.com.Disconnect(ctxT(t), consumer.StatusNormal) // left
	a.awaitNoticeAndUsers("bob has left the chat", "ann")
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("leave announced after %v: it waited for the lost socket's grace period", d)
	}
	a.quiet("notice", "bob has left the chat", 200*time.Millisecond)
}

// A ping is answered with a pong at any time, and costs no error.
func TestPingPong(t *testing.T) {
	n := newNode(t, nil, nil)
	a := n.join(t, "ann", "s1", "r", "")
	a.joinFrames("ann")
	for range 3 * maxErrors { // more than the error budget: none is an error
		a.send(map[string]string{"type": "ping"})
		if f := a.next(); f.Type != "pong" {
			t.Fatalf("got %+v, want a pong", f)
		}
	}
}
