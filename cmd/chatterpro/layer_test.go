package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

// The chat's layer channels hold channelCapacity events, not the layers'
// default of 100: a connection whose dispatcher is late is not closed
// while its outgoing queue is far from its byte cap.
func TestLayerChannelCapacity(t *testing.T) {
	rs := redistest.Start(t)
	for _, raw := range []string{"memory://", "redis://" + rs.Addr() + "/0"} {
		kind, _, _ := strings.Cut(raw, ":")
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := openLayer(ctx, raw, layerSettings{history: 1000}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(context.Background())
			ch, err := l.NewChannel(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.GroupAdd(ctx, "room", ch); err != nil {
				t.Fatal(err)
			}
			// A directed Send reports a full channel at once.
			m := channellayer.Message{Type: "chat", Body: []byte(`{"text":"hi"}`)}
			for i := range channelCapacity {
				if err := l.Send(ctx, ch, m); err != nil {
					t.Fatalf("send %d of %d: %v", i+1, channelCapacity, err)
				}
			}
			if err := l.Send(ctx, ch, m); !errors.Is(err, channellayer.ErrChannelFull) {
				t.Fatalf("send %d: %v, want ErrChannelFull", channelCapacity+1, err)
			}
			for i := range channelCapacity {
				if _, err := l.Receive(ctx, ch); err != nil {
					t.Fatalf("receive %d: %v", i+1, err)
				}
			}
		})
	}
}

// A node's Redis pool has a connection for every join that may wait on
// Redis at once (--max-connecting) and room for the background work.
func TestPoolSizeCoversJoins(t *testing.T) {
	for _, tc := range []struct{ connecting, least int }{
		{0, 64 + 16}, {64, 64 + 16}, {8, 8 + 16}, {200, 200 + 16}, {-1, 256},
	} {
		if got := poolSize(tc.connecting); got < tc.least {
			t.Errorf("poolSize(%d) = %d, want at least %d", tc.connecting, got, tc.least)
		}
	}
}

// slowReplies is a TCP proxy to a Redis whose replies it holds for delay
// (while delay is set) before passing them on.
type slowReplies struct {
	ln    net.Listener
	delay atomic.Int64 // ns

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startSlowReplies(t *testing.T, to string) *slowReplies {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowReplies{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(s, c); s.Close() }()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := s.Read(buf)
					if n > 0 {
						time.Sleep(time.Duration(p.delay.Load()))
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// openSlowLayer opens a node's layer on rs through a slowReplies proxy;
// the layer is closed when the test ends, before the proxy.
func openSlowLayer(t *testing.T, ctx context.Context, rs *redistest.Server) (*slowReplies, channellayer.Layer) {
	t.Helper()
	proxy := startSlowReplies(t, rs.Addr())
	l, err := openLayer(ctx, "redis://"+proxy.ln.Addr().String()+"/0", layerSettings{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return proxy, l
}

// A record whose answer comes after its deadline fails, and is not sent
// again, waited for or not: a record that Redis ran but answered late
// must not run twice (the same message recorded twice, under two IDs, for
// every member). A record waits at most 5 s (the node's read timeout, and
// an unwaited record's batch deadline), however long its caller's deadline
// (here 30 s).
func TestLateAnswerIsNotRetried(t *testing.T) {
	rs := redistest.Start(t)
	m, err := channellayer.NewMessage("chat", map[string]string{"text": "once"})
	if err != nil {
		t.Fatal(err)
	}
	// Each case on a layer of its own: after a late answer a layer is
	// not ready until Redis answers its ping in time, and the next call
	// would fail without being sent.
	for _, waited := range []bool{true, false} {
		group := fmt.Sprintf("waited-%v", waited)
		t.Run(group, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			proxy, l := openSlowLayer(t, ctx, rs)
			h, rec := l.(channellayer.History), l.(channellayer.Recorder)
			record := func(group string) error {
				if waited {
					_, err := h.GroupSendRecorded(ctx, group, m)
					return err
				}
				done := make(chan error, 1)
				rec.GroupSendRecordedAsync(group, m, func(_ channellayer.Message, err error) { done <- err })
				return <-done
			}
			if err := record("warm-up"); err != nil { // loads the script
				t.Fatal(err)
			}
			proxy.delay.Store(int64(5500 * time.Millisecond)) // beyond the 5 s bound
			if err := record(group); err == nil {
				t.Fatal("a record answered after 5.5 s succeeded")
			}
			proxy.delay.Store(0)
			var got []channellayer.Message
			testkit.EventuallyNil(t, 10*time.Second, func() error {
				var err error // not the test's: the cases run in parallel
				got, err = h.Recent(ctx, group, 10)
				if err != nil || len(got) == 0 {
					return fmt.Errorf("history: %d messages, %v; want the record that came late", len(got), err)
				}
				return nil
			}, "the late record in the history")
			if len(got) != 1 {
				t.Errorf("the record answered late is in the history %d times, want once", len(got))
			}
		})
	}
}

// A Redis slow to answer, but within the caller's deadline, is waited
// for: a presence refresh (5 s), a waited record (5 s) and an unwaited one
// (its batch's 5 s) all succeed when each answer takes 2.5 s. With a fixed
// 2 s read timeout they failed, and a loaded node's refreshes timed out
// and were sent again while Redis was still running them.
func TestSlowAnswerWithinDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proxy, l := openSlowLayer(t, ctx, redistest.Start(t))
	m, err := channellayer.NewMessage("chat", map[string]string{"text": "slow"})
	if err != nil {
		t.Fatal(err)
	}
	h, rec, pr := l.(channellayer.History), l.(channellayer.Recorder), l.(channellayer.PresenceRefresher)
	if _, err := h.GroupSendRecorded(ctx, "warm-up", m); err != nil { // loads the script
		t.Fatal(err)
	}
	entries := map[string][]channellayer.Member{"room": {{Key: "ada", Info: []byte(`{"name":"ada"}`)}}}
	if err := pr.TrackAll(ctx, entries, 30*time.Second); err != nil { // loads the script
		t.Fatal(err)
	}
	proxy.delay.Store(int64(2500 * time.Millisecond))
	within := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }
	cctx, ccancel := within()
	err = pr.TrackAll(cctx, entries, 30*time.Second)
	ccancel()
	if err != nil {
		t.Errorf("a presence refresh answered in 2.5 s, deadline 5 s: %v", err)
	}
	cctx, ccancel = within()
	_, err = h.GroupSendRecorded(cctx, "slow", m)
	ccancel()
	if err != nil {
		t.Errorf("a waited record answered in 2.5 s, deadline 5 s: %v", err)
	}
	done := make(chan error, 1)
	rec.GroupSendRecordedAsync("slow", m, func(_ channellayer.Message, err error) { done <- err })
	if err := <-done; err != nil {
		t.Errorf("an unwaited record answered in 2.5 s: %v", err)
	}
}

// One Redis, a Sentinel-run primary and a cluster all get the node's
// client settings: deadlines from the calls, the retries, the pool, the
// buffers.
func TestEveryKindOfRedisIsTuned(t *testing.T) {
	o := tuned(64)
	simple, cluster, failover := o.Simple(), o.Cluster(), o.Failover()
	type got struct {
		byDeadline                   bool
		read, write                  time.Duration
		retries, pool                int
		buf, wbuf, pipeBuf, pipeWbuf int
	}
	want := got{true, 5 * time.Second, 5 * time.Second, 1, poolSize(64), redisBuffer, redisBuffer, redisPipelineBuffer, redisPipelineBuffer}
	for kind, g := range map[string]got{
		"redis":          {simple.ContextTimeoutEnabled, simple.ReadTimeout, simple.WriteTimeout, simple.MaxRetries, simple.PoolSize, simple.ReadBufferSize, simple.WriteBufferSize, simple.PipelineReadBufferSize, simple.PipelineWriteBufferSize},
		"redis-cluster":  {cluster.ContextTimeoutEnabled, cluster.ReadTimeout, cluster.WriteTimeout, cluster.MaxRetries, cluster.PoolSize, cluster.ReadBufferSize, cluster.WriteBufferSize, cluster.PipelineReadBufferSize, cluster.PipelineWriteBufferSize},
		"redis-sentinel": {failover.ContextTimeoutEnabled, failover.ReadTimeout, failover.WriteTimeout, failover.MaxRetries, failover.PoolSize, failover.ReadBufferSize, failover.WriteBufferSize, failover.PipelineReadBufferSize, failover.PipelineWriteBufferSize},
	} {
		if g != want {
			t.Errorf("%s: %+v, want %+v", kind, g, want)
		}
	}
}

// A message several times longer than the node's Redis buffers comes
// whole through its pub/sub connection, even in parts a second apart (the
// replies' proxy holds each part), and so does a long history read.
func TestLongMessagesThroughSmallBuffers(t *testing.T) {
	rs := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sender, err := openLayer(ctx, "redis://"+rs.Addr()+"/0", layerSettings{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close(context.Background())
	proxy, receiver := openSlowLayer(t, ctx, rs)
	ch, err := receiver.NewChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.GroupAdd(ctx, "long", ch); err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("0123456789abcdef", 5*redisBuffer/16) // five buffers
	msg, err := channellayer.NewMessage("chat.message", map[string]string{"text": text})
	if err != nil {
		t.Fatal(err)
	}
	proxy.delay.Store(int64(time.Second))
	if _, err := sender.(channellayer.History).GroupSendRecorded(ctx, "long", msg); err != nil {
		t.Fatal(err)
	}
	got, err := receiver.Receive(ctx, ch)
	if err != nil {
		t.Fatalf("the long message: %v", err)
	}
	var body struct{ Text string }
	if err := json.Unmarshal(got.Body, &body); err != nil || body.Text != text {
		t.Fatalf("received %d bytes of text (%v), want the %d sent", len(body.Text), err, len(text))
	}
	recent, err := receiver.(channellayer.History).Recent(ctx, "long", 10)
	if err != nil || len(recent) != 1 || !bytes.Equal(recent[0].Body, got.Body) {
		t.Fatalf("history read of the long message: %d messages, %v", len(recent), err)
	}
}
