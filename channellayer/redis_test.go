package channellayer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/channellayer/layertest"
	"github.com/chatterpro/chatterpro/internal/harness"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// store is a Redis for a test: miniredis or a real redis-server.
type store struct {
	name string
	addr string
	real *redistest.Server    // nil for miniredis
	mini *miniredis.Miniredis // nil for redis-server
}

var prefixSeq atomic.Int64

// newPrefix returns a key prefix no other test uses.
func newPrefix() string { return "t" + strconv.FormatInt(prefixSeq.Add(1), 10) }

func stores(t *testing.T) []func(t *testing.T) *store {
	return []func(t *testing.T) *store{
		func(t *testing.T) *store {
			mr := miniredis.RunT(t)
			return &store{name: "miniredis", addr: mr.Addr(), mini: mr}
		},
		func(t *testing.T) *store {
			s := redistest.Start(t)
			return &store{name: "redis-server", addr: s.Addr(), real: s}
		},
	}
}

// eachStore runs f against miniredis and a real redis-server.
func eachStore(t *testing.T, f func(t *testing.T, s *store)) {
	t.Helper()
	for i, start := range stores(t) {
		t.Run([]string{"miniredis", "redis-server"}[i], func(t *testing.T) {
			f(t, start(t))
		})
	}
}

func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		MaxRetries:   -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// peerLayers opens two layers on the Redis at addr that share a fresh
// prefix: two processes of one deployment.
func peerLayers(t testing.TB, addr string) (a, b *channellayer.Redis) {
	t.Helper()
	prefix := newPrefix()
	return newRedisLayer(t, addr, prefix, channellayer.RedisOptions{}), newRedisLayer(t, addr, prefix, channellayer.RedisOptions{})
}

func newRedisLayer(t testing.TB, addr, prefix string, opts channellayer.RedisOptions) *channellayer.Redis {
	t.Helper()
	return openRedisLayer(t, newClient(t, addr), prefix, opts, 5*time.Second)
}

// openRedisLayer builds a layer on client (one Redis or a cluster), with a
// discarding logger unless opts has one, and closes it with the test.
func openRedisLayer(t testing.TB, client redis.UniversalClient, prefix string, opts channellayer.RedisOptions, wait time.Duration) *channellayer.Redis {
	t.Helper()
	opts.Prefix = prefix
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	l, err := channellayer.NewRedis(ctx, client, opts)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func tctx(t testing.TB, d time.Duration) context.Context { return testkit.ContextWithin(t, d) }

func mustMsg(t testing.TB, typ string, v any) channellayer.Message {
	t.Helper()
	m, err := channellayer.NewMessage(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newChan(t testing.TB, l channellayer.Layer, groups ...string) string {
	t.Helper()
	ch, err := l.NewChannel(tctx(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if err := l.GroupAdd(tctx(t, 5*time.Second), g, ch); err != nil {
			t.Fatalf("GroupAdd(%q): %v", g, err)
		}
	}
	return ch
}

func recv(t testing.TB, l channellayer.Layer, ch string) channellayer.Message {
	t.Helper()
	m, err := l.Receive(tctx(t, 5*time.Second), ch)
	if err != nil {
		t.Fatalf("Receive(%s): %v", ch, err)
	}
	return m
}

// silent checks that nothing more arrives on a channel for a moment.
func silent(t testing.TB, l channellayer.Layer, ch string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if m, err := l.Receive(ctx, ch); err == nil {
		t.Fatalf("unexpected message on %s: %s", ch, m.Body)
	}
}

func seqOf(t testing.TB, m channellayer.Message) int {
	t.Helper()
	var v struct{ N int }
	if err := m.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.N
}

func TestRedisConformance(t *testing.T) {
	for i, start := range stores(t) {
		t.Run([]string{"miniredis", "redis-server"}[i], func(t *testing.T) {
			s := start(t)
			layertest.Run(t, func(t *testing.T) layertest.Setup {
				prefix := newPrefix()
				opts := channellayer.RedisOptions{Capacity: 16, Expiry: 400 * time.Millisecond, HistorySize: 16}
				setup := layertest.Setup{
					Layer:       newRedisLayer(t, s.addr, prefix, opts),
					Peer:        func(t *testing.T) channellayer.Layer { return newRedisLayer(t, s.addr, prefix, opts) },
					Capacity:    16,
					Expiry:      400 * time.Millisecond,
					HistorySize: 16,
				}
				if s.mini != nil {
					// Real time passes too: the layer holds messages
					// in its own buffers, which expire by the clock.
					setup.Sleep = func(d time.Duration) { time.Sleep(d); s.mini.FastForward(d) }
					setup.Restart = func(t *testing.T, down func()) {
						s.mini.Close()
						down()
						if err := s.mini.Restart(); err != nil {
							t.Fatalf("restarting miniredis: %v", err)
						}
					}
				} else {
					setup.Restart = func(t *testing.T, down func()) {
						s.real.Kill()
						down()
						s.real.Restart(t)
					}
				}
				return setup
			})
		})
	}
}

// TestRedisGroupSendTwoProcesses: members on two layers over one Redis get
// every group message once and in order, whichever layer sent it.
func TestRedisGroupSendTwoProcesses(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		a, b := peerLayers(t, s.addr)
		const g = "room {1}%"
		a1, a2 := newChan(t, a, g), newChan(t, a, g)
		b1 := newChan(t, b, g)
		const n = 30
		for i := range n {
			sender := channellayer.Layer(a)
			if i%2 == 1 {
				sender = b
			}
			if err := sender.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": i})); err != nil {
				t.Fatalf("GroupSend %d: %v", i, err)
			}
		}
		// One sender per layer: each sender's messages in order.
		for _, m := range []struct {
			l  channellayer.Layer
			ch string
		}{{a, a1}, {a, a2}, {b, b1}} {
			next := [2]int{0, 1}
			for range n {
				got := seqOf(t, recv(t, m.l, m.ch))
				if got != next[got%2] {
					t.Fatalf("%s: got message %d, want %d", m.ch, got, next[got%2])
				}
				next[got%2] += 2
			}
			silent(t, m.l, m.ch)
		}
	})
}

// TestRedisDirectedSend: Send reaches a channel of another process; a
// channel of a process that is gone is ErrNoChannel.
func TestRedisDirectedSend(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		a, b := peerLayers(t, s.addr)
		ach := newChan(t, a)
		want := mustMsg(t, "direct", map[string]string{"x": "y"})
		if err := b.Send(tctx(t, 5*time.Second), ach, want); err != nil {
			t.Fatalf("Send across: %v", err)
		}
		if got := recv(t, a, ach); string(got.Body) != string(want.Body) || got.Type != want.Type {
			t.Fatalf("got %q %s, want %q %s", got.Type, got.Body, want.Type, want.Body)
		}
		if err := a.Close(tctx(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		// Redis notices the closed connection a moment later.
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if err := b.Send(tctx(t, 5*time.Second), ach, want); !errors.Is(err, channellayer.ErrNoChannel) {
				return fmt.Errorf("Send = %v, want ErrNoChannel", err)
			}
			return nil
		}, "Send to a closed process")
		if err := a.Send(tctx(t, 5*time.Second), ach, want); !errors.Is(err, channellayer.ErrClosed) {
			t.Fatalf("Send on a closed layer: %v, want ErrClosed", err)
		}
	})
}

// TestRedisRecorded: a recorded send is one script and arrives everywhere
// with its ID as the first body field; history reads it back.
func TestRedisRecorded(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		prefix := newPrefix()
		a := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{HistorySize: 5})
		b := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{HistorySize: 5})
		const g = "history"
		bch := newChan(t, b, g)
		var sent []channellayer.Message
		for i := range 8 {
			m, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": i}))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(m.Body), `{"id":"`+m.ID+`","type":"chat"`) {
				t.Fatalf("recorded body %s", m.Body)
			}
			sent = append(sent, m)
			got := recv(t, b, bch)
			if got.ID != m.ID || string(got.Body) != string(m.Body) {
				t.Fatalf("received %q %s, want %q %s", got.ID, got.Body, m.ID, m.Body)
			}
		}
		recent, err := b.Recent(tctx(t, 5*time.Second), g, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(recent) != 3 || recent[0].ID != sent[5].ID || recent[2].ID != sent[7].ID || string(recent[2].Body) != string(sent[7].Body) {
			t.Fatalf("Recent(3) = %v", recent)
		}
		since, err := b.Since(tctx(t, 5*time.Second), g, sent[4].ID)
		if err != nil || len(since) != 3 || since[0].ID != sent[5].ID {
			t.Fatalf("Since(sent[4]) = %v, %v", since, err)
		}
		for _, id := range []string{sent[0].ID, "bogus", "1-0", ""} { // trimmed, malformed, unknown
			if _, err := b.Since(tctx(t, 5*time.Second), g, id); !errors.Is(err, channellayer.ErrUnknownID) {
				t.Fatalf("Since(%q) = %v, want ErrUnknownID", id, err)
			}
		}
		if _, err := b.Since(tctx(t, 5*time.Second), "other", sent[7].ID); !errors.Is(err, channellayer.ErrUnknownID) {
			t.Fatalf("Since in another group = %v, want ErrUnknownID", err)
		}
	})
}

// TestRedisPresence: entries are shared, expire, and each expired entry is
// handed to one Expire call only.
func TestRedisPresence(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		a, b := peerLayers(t, s.addr)
		ctx := tctx(t, 5*time.Second)
		if err := a.Track(ctx, "g", "k1", []byte("one"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := b.Track(ctx, "g", "k2", nil, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		list, err := b.List(ctx, "g")
		if err != nil || len(list) != 2 || list[0].Key != "k1" || string(list[0].Info) != "one" || list[1].Key != "k2" {
			t.Fatalf("List = %v, %v", list, err)
		}
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if list, _ = a.List(ctx, "g"); len(list) != 1 || list[0].Key != "k1" {
				return fmt.Errorf("List = %v, want k1 alone", list)
			}
			return nil
		}, "k2's entry expiring")
		var total atomic.Int64
		var wg sync.WaitGroup
		for _, l := range []*channellayer.Redis{a, b, a, b} {
			wg.Go(func() {
				got, err := l.Expire(ctx, "g")
				if err != nil {
					t.Error(err)
				}
				for _, m := range got {
					if m.Key != "k2" {
						t.Errorf("expired %q", m.Key)
					}
				}
				total.Add(int64(len(got)))
			})
		}
		wg.Wait()
		if total.Load() != 1 {
			t.Fatalf("expired entries handed out %d times, want 1", total.Load())
		}
		if err := a.Untrack(ctx, "g", "k1"); err != nil {
			t.Fatal(err)
		}
		if list, _ := b.List(ctx, "g"); len(list) != 0 {
			t.Fatalf("List after Untrack = %v", list)
		}
	})
}

func numsub(t testing.TB, c *redis.Client, ch string) int64 {
	t.Helper()
	res, err := c.PubSubNumSub(tctx(t, 5*time.Second), ch).Result()
	if err != nil {
		t.Fatal(err)
	}
	return res[ch]
}

// TestRedisUnsubscribe: a process subscribes to a group while it has local
// members, and only then.
func TestRedisUnsubscribe(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		prefix := newPrefix()
		a := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{})
		b := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{})
		c := newClient(t, s.addr)
		const g = "g{x}"
		gch := prefix + ":{g%7Bx%7D}:g"
		a1, a2 := newChan(t, a, g), newChan(t, a, g)
		b1 := newChan(t, b, g)
		if n := numsub(t, c, gch); n != 2 {
			t.Fatalf("NUMSUB %s = %d, want 2 (one per process)", gch, n)
		}
		ctx := tctx(t, 5*time.Second)
		if err := a.GroupDiscard(ctx, g, a1); err != nil {
			t.Fatal(err)
		}
		if err := b.GroupDiscard(ctx, g, b1); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if n := numsub(t, c, gch); n != 1 {
				return fmt.Errorf("NUMSUB = %d, want 1", n)
			}
			return nil
		}, "b unsubscribes")
		if err := a.DiscardChannel(ctx, a2); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if n := numsub(t, c, gch); n != 0 {
				return fmt.Errorf("NUMSUB = %d, want 0", n)
			}
			return nil
		}, "a unsubscribes")
		// Joining again subscribes again.
		b2 := newChan(t, b, g)
		if err := a.GroupSend(ctx, g, mustMsg(t, "x", nil)); err != nil {
			t.Fatal(err)
		}
		recv(t, b, b2)
	})
}

// commandCalls reads the call counts of INFO commandstats.
func commandCalls(t testing.TB, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.Info(tctx(t, 5*time.Second), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int)
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(n)
	}
	return out
}

// TestRedisOnePublishPerGroupSend proves on a real server that a group send
// to members on two processes is one PUBLISH, and a recorded one one script.
func TestRedisOnePublishPerGroupSend(t *testing.T) {
	srv := redistest.Start(t)
	a, b := peerLayers(t, srv.Addr())
	c := newClient(t, srv.Addr())
	const g = "big"
	var chans []string
	for range 10 {
		chans = append(chans, newChan(t, a, g))
	}
	bch := newChan(t, b, g)
	ctx := tctx(t, 5*time.Second)
	// Load the script first, so that the count below is its steady state.
	if _, err := a.GroupSendRecorded(ctx, g, mustMsg(t, "warm", nil)); err != nil {
		t.Fatal(err)
	}
	recv(t, b, bch)
	for _, ch := range chans {
		recv(t, a, ch)
	}

	before := commandCalls(t, c)
	if err := b.GroupSend(ctx, g, mustMsg(t, "plain", nil)); err != nil {
		t.Fatal(err)
	}
	after := commandCalls(t, c)
	if d := after["publish"] - before["publish"]; d != 1 {
		t.Fatalf("PUBLISH calls for one group send: %d, want 1", d)
	}
	for _, ch := range chans {
		if m := recv(t, a, ch); m.Type != "plain" {
			t.Fatalf("got %q", m.Type)
		}
	}
	recv(t, b, bch)

	before = commandCalls(t, c)
	if _, err := b.GroupSendRecorded(ctx, g, mustMsg(t, "recorded", nil)); err != nil {
		t.Fatal(err)
	}
	after = commandCalls(t, c)
	for cmd, want := range map[string]int{"evalsha": 1, "eval": 0, "xadd": 1, "publish": 1} {
		if d := after[cmd] - before[cmd]; d != want {
			t.Errorf("%s calls for one recorded group send: %d, want %d", cmd, d, want)
		}
	}
	for _, ch := range chans {
		if m := recv(t, a, ch); m.Type != "recorded" || m.ID == "" {
			t.Fatalf("got %q %q", m.Type, m.ID)
		}
	}
	recv(t, b, bch)
}

// TestRedisRestart kills Redis under two layers: they report it, fail fast,
// and work again by themselves once it is back.
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	a, b := peerLayers(t, srv.Addr())
	const g = "restart"
	ach, bch := newChan(t, a, g), newChan(t, b, g)
	if err := a.Check(tctx(t, 5*time.Second)); err != nil {
		t.Fatalf("Check before: %v", err)
	}

	srv.Kill()
	for _, l := range []*channellayer.Redis{a, b} {
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if err := l.Check(tctx(t, time.Second)); !errors.Is(err, channellayer.ErrUnavailable) {
				return fmt.Errorf("Check = %v, want ErrUnavailable", err)
			}
			return nil
		}, "not ready while Redis is down")
	}
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GroupSend", func(ctx context.Context) error { return a.GroupSend(ctx, g, mustMsg(t, "x", nil)) }},
		{"GroupSendRecorded", func(ctx context.Context) error {
			_, err := a.GroupSendRecorded(ctx, g, mustMsg(t, "x", nil))
			return err
		}},
		{"Send", func(ctx context.Context) error { return b.Send(ctx, ach, mustMsg(t, "x", nil)) }},
		{"GroupAdd", func(ctx context.Context) error { return a.GroupAdd(ctx, "other", ach) }},
		{"Recent", func(ctx context.Context) error { _, err := a.Recent(ctx, g, 5); return err }},
		{"Track", func(ctx context.Context) error { return a.Track(ctx, g, "k", nil, time.Second) }},
		{"List", func(ctx context.Context) error { _, err := a.List(ctx, g); return err }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call(tctx(t, 3*time.Second))
		if !errors.Is(err, channellayer.ErrUnavailable) {
			t.Errorf("%s while Redis is down: %v, want ErrUnavailable", c.name, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("%s while Redis is down took %v", c.name, d)
		}
	}
	// Local work goes on.
	if err := a.Send(tctx(t, time.Second), ach, mustMsg(t, "local", nil)); err != nil {
		t.Fatalf("local Send while Redis is down: %v", err)
	}
	if m := recv(t, a, ach); m.Type != "local" {
		t.Fatalf("got %q", m.Type)
	}

	srv.Restart(t)
	for _, l := range []*channellayer.Redis{a, b} {
		testkit.EventuallyNil(t, 5*time.Second, func() error { return l.Check(tctx(t, time.Second)) }, "ready after restart")
	}
	for i, l := range []*channellayer.Redis{a, b} {
		if err := l.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "after", map[string]int{"n": i})); err != nil {
			t.Fatalf("GroupSend after restart: %v", err)
		}
	}
	for _, m := range []struct {
		l  *channellayer.Redis
		ch string
	}{{a, ach}, {b, bch}} {
		for i := range 2 {
			if got := recv(t, m.l, m.ch); got.Type != "after" || seqOf(t, got) != i {
				t.Fatalf("after restart got %s", got.Body)
			}
		}
		silent(t, m.l, m.ch)
	}
}

// TestRedisNoWait opens two layers before their Redis runs: they start
// not ready, fail fast, and work by themselves once Redis is up.
func TestRedisNoWait(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	prefix := newPrefix()
	// A context that has already ended: NoWait must not wait on it.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	var logs harness.Log
	layers := make([]*channellayer.Redis, 2)
	for i := range layers {
		l, err := channellayer.NewRedis(ended, newClient(t, addr), channellayer.RedisOptions{
			Prefix: prefix, NoWait: true, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatalf("NewRedis with NoWait and no Redis: %v", err)
		}
		t.Cleanup(func() { l.Close(context.Background()) })
		layers[i] = l
	}
	a, b := layers[0], layers[1]
	if err := a.Check(tctx(t, time.Second)); !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("Check before Redis runs: %v, want ErrUnavailable", err)
	}
	if err := a.GroupSend(tctx(t, 3*time.Second), "g", mustMsg(t, "x", nil)); !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("GroupSend before Redis runs: %v, want ErrUnavailable", err)
	}
	// A layer that never was ready says why, so that an outage or a wrong
	// address does not go unseen.
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		if out := logs.String(); !strings.Contains(out, "redis still unavailable") || !strings.Contains(out, "connection refused") {
			return fmt.Errorf("log so far: %q", out)
		}
		return nil
	}, "a log line saying why the layer is not ready")

	redistest.StartOpts(t, redistest.Options{Port: port})
	for _, l := range layers {
		testkit.EventuallyNil(t, 5*time.Second, func() error { return l.Check(tctx(t, time.Second)) }, "ready once Redis runs")
	}
	bch := newChan(t, b, "g")
	if err := a.GroupSend(tctx(t, 5*time.Second), "g", mustMsg(t, "hello", nil)); err != nil {
		t.Fatalf("GroupSend once Redis runs: %v", err)
	}
	if m := recv(t, b, bch); m.Type != "hello" {
		t.Fatalf("got %q, want hello", m.Type)
	}
}

// proxy is a TCP proxy to Redis that a test can cut, to take one layer off
// Redis while others stay on.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	// stall, if set: a chunk from Redis that holds it is passed on in
	// two parts, stallFor apart, split in the middle of stall.
	stall    []byte
	stallFor time.Duration
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipeDown(c, up)
		go p.pipe(up, c)
	}
}

// pipeDown passes on what Redis sends, stalling in the middle of p.stall.
func (p *proxy) pipeDown(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		p.mu.Lock()
		stall, d := p.stall, p.stallFor
		p.mu.Unlock()
		if i := bytes.Index(chunk, stall); len(stall) > 0 && i >= 0 {
			half := i + len(stall)/2
			if _, werr := dst.Write(chunk[:half]); werr != nil {
				return
			}
			time.Sleep(d)
			chunk = chunk[half:]
		}
		if _, werr := dst.Write(chunk); werr != nil || err != nil {
			return
		}
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// setCut cuts every connection and refuses new ones, or lets them in again.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	var conns []net.Conn
	if cut {
		for c := range p.conns {
			conns = append(conns, c)
		}
		clear(p.conns)
	}
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}

// TestRedisGapRepair: messages recorded while a layer was off Redis reach its
// members from history when it is back, once each and in order.
func TestRedisGapRepair(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store) {
		prefix := newPrefix()
		p := newProxy(t, s.addr)
		a := newRedisLayer(t, s.addr, prefix, channellayer.RedisOptions{})
		b := newRedisLayer(t, p.addr(), prefix, channellayer.RedisOptions{})
		const g = "gap"
		ach, bch := newChan(t, a, g), newChan(t, b, g)
		n := 0
		send := func() {
			t.Helper()
			if _, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": n})); err != nil {
				t.Fatal(err)
			}
			n++
		}
		send()
		recv(t, b, bch)
		p.setCut(true)
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if err := b.Check(tctx(t, time.Second)); err == nil {
				return errors.New("still ready")
			}
			return nil
		}, "b notices")
		for range 5 {
			send()
		}
		p.setCut(false)
		testkit.EventuallyNil(t, 5*time.Second, func() error { return b.Check(tctx(t, time.Second)) }, "b is back")
		for range 3 {
			send()
		}
		for i := 1; i < n; i++ {
			if got := seqOf(t, recv(t, b, bch)); got != i {
				t.Fatalf("b got message %d, want %d", got, i)
			}
		}
		silent(t, b, bch)
		for i := range n {
			if got := seqOf(t, recv(t, a, ach)); got != i {
				t.Fatalf("a got message %d, want %d", got, i)
			}
		}
	})
}

// TestRedisPubSubKilled kills every pub/sub connection of a real server in
// the middle of a stream of recorded sends: every message that was sent
// arrives once, in order.
func TestRedisPubSubKilled(t *testing.T) {
	srv := redistest.Start(t)
	a, b := peerLayers(t, srv.Addr())
	c := newClient(t, srv.Addr())
	const g = "killed"
	ach, bch := newChan(t, a, g), newChan(t, b, g)
	const total = 60
	for i := range total {
		if i == total/3 {
			killPubSub(t, c)
		}
		msg := mustMsg(t, "chat", map[string]int{"n": i})
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			_, err := a.GroupSendRecorded(tctx(t, time.Second), g, msg)
			return err
		}, "recorded send")
	}
	for _, m := range []struct {
		l  *channellayer.Redis
		ch string
	}{{a, ach}, {b, bch}} {
		for i := range total {
			if got := seqOf(t, recv(t, m.l, m.ch)); got != i {
				t.Fatalf("got message %d, want %d", got, i)
			}
		}
		silent(t, m.l, m.ch)
	}
}

// TestRedisManyGroupsRepaired: see testManyGroupsRepaired; on one Redis,
// go-redis subscribes the new connection to every channel in one command.
func TestRedisManyGroupsRepaired(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	peer := newRedisLayer(t, srv.Addr(), prefix, channellayer.RedisOptions{})
	c := newClient(t, srv.Addr())
	testManyGroupsRepaired(t, newClient(t, srv.Addr()), peer, prefix, func() { killPubSub(t, c) })
}

func TestRedisOptions(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	tests := []struct {
		name string
		opts channellayer.RedisOptions
	}{
		{"negative capacity", channellayer.RedisOptions{Capacity: -1}},
		{"negative history", channellayer.RedisOptions{HistorySize: -1}},
		{"brace in prefix", channellayer.RedisOptions{Prefix: "a{b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := channellayer.NewRedis(tctx(t, time.Second), c, tt.opts); !errors.Is(err, channellayer.ErrInvalid) {
				t.Fatalf("NewRedis = %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		port, err := redistest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, "127.0.0.1:"+strconv.Itoa(port))
		_, err = channellayer.NewRedis(tctx(t, 300*time.Millisecond), c, channellayer.RedisOptions{})
		if !errors.Is(err, channellayer.ErrUnavailable) {
			t.Fatalf("NewRedis without Redis = %v, want ErrUnavailable", err)
		}
	})
}

// TestRedisIdle: an idle pub/sub connection is pinged, not dropped, and the
// layer stays ready and working.
func TestRedisIdle(t *testing.T) {
	srv := redistest.Start(t)
	a, b := peerLayers(t, srv.Addr())
	const g = "idle"
	bch := newChan(t, b, g)
	time.Sleep(2500 * time.Millisecond) // real idle time is what is tested: the connections idle past the pings
	for _, l := range []*channellayer.Redis{a, b} {
		if err := l.Check(tctx(t, time.Second)); err != nil {
			t.Fatalf("Check after idling: %v", err)
		}
	}
	if err := a.GroupSend(tctx(t, time.Second), g, mustMsg(t, "wake", nil)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, b, bch); m.Type != "wake" {
		t.Fatalf("got %q", m.Type)
	}
}

// A pub/sub message that reaches a layer in two parts, longer apart than
// the layer's health period (1 s), is read whole: a read deadline of that
// period cut it in the middle, the next read took the rest for a reply
// ("can't parse"), and the layer lost its connection and the message with
// it. A starved process reading a long signal slowly did the same.
func TestRedisSlowMessageIsReadWhole(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	p := newProxy(t, srv.Addr())
	a := newRedisLayer(t, srv.Addr(), prefix, channellayer.RedisOptions{})
	b := newRedisLayer(t, p.addr(), prefix, channellayer.RedisOptions{})
	const g = "slow"
	ch := newChan(t, b, g)
	p.mu.Lock()
	p.stall, p.stallFor = []byte("stall-here"), 1600*time.Millisecond
	p.mu.Unlock()
	text := strings.Repeat("x", 20000) + "stall-here" + strings.Repeat("y", 20000)
	if err := a.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]string{"text": text})); err != nil {
		t.Fatal(err)
	}
	m, err := b.Receive(tctx(t, 10*time.Second), ch)
	if err != nil {
		t.Fatalf("the message that came in two parts: %v", err)
	}
	var got struct{ Text string }
	if err := json.Unmarshal(m.Body, &got); err != nil || got.Text != text {
		t.Fatalf("received %d bytes of text (%v), want the %d sent", len(got.Text), err, len(text))
	}
}

// A pub/sub connection whose health ping goes unanswered for more than
// three health periods makes the layer not ready, and its late answer
// ready again, without waiting for a read of the connection to time out.
func TestRedisUnansweredPingMakesLayerNotReady(t *testing.T) {
	srv := redistest.Start(t)
	p := newProxy(t, srv.Addr())
	l := newRedisLayer(t, p.addr(), newPrefix(), channellayer.RedisOptions{})
	p.mu.Lock()
	p.stall, p.stallFor = []byte("health"), 7*time.Second // the pong of the health ping
	p.mu.Unlock()
	testkit.Eventually(t, 7*time.Second, func() bool {
		return errors.Is(l.Check(tctx(t, time.Second)), channellayer.ErrUnavailable)
	}, "the layer not ready while its pub/sub connection is silent")
	testkit.EventuallyNil(t, 15*time.Second, func() error { return l.Check(tctx(t, time.Second)) }, "the layer ready again once the pong came")
}
