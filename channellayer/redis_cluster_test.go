package channellayer_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/channellayer/layertest"
	"github.com/chatterpro/chatterpro/internal/harness"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
)

func newClusterClient(t testing.TB, addrs []string) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        addrs,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		MaxRetries:   1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newClusterLayer(t testing.TB, cl *redistest.Cluster, prefix string, opts channellayer.RedisOptions) *channellayer.Redis {
	t.Helper()
	return openRedisLayer(t, newClusterClient(t, cl.Addrs()), prefix, opts, 10*time.Second)
}

// clusterEnv is a three-master cluster with a plain client per node.
type clusterEnv struct {
	cl    *redistest.Cluster
	cc    *redis.ClusterClient
	nodes []*redis.Client // by node index
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	cl := redistest.StartCluster(t, 3)
	e := &clusterEnv{cl: cl, cc: newClusterClient(t, cl.Addrs())}
	for _, a := range cl.Addrs() {
		e.nodes = append(e.nodes, newClient(t, a))
	}
	return e
}

// owner returns the index of the node that owns a group's slot (its keys
// are "<prefix>:{<group>}:...": the slot is the group's).
func (e *clusterEnv) owner(t testing.TB, group string) int {
	t.Helper()
	slot, err := e.cc.ClusterKeySlot(tctx(t, 5*time.Second), "x:{"+group+"}:g").Result()
	if err != nil {
		t.Fatal(err)
	}
	o, err := e.cl.Owner(int(slot))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// groupsPerNode returns one group name per node, each owned by that node.
func (e *clusterEnv) groupsPerNode(t testing.TB, base string) []string {
	t.Helper()
	out := make([]string, e.cl.Len())
	found := 0
	for i := 0; found < len(out) && i < 1000; i++ {
		g := base + "-" + strconv.Itoa(i)
		if o := e.owner(t, g); out[o] == "" {
			out[o] = g
			found++
		}
	}
	if found < len(out) {
		t.Fatalf("no group names found for every node: %v", out)
	}
	return out
}

// TestRedisCluster runs the layer on a Redis Cluster of three masters.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t)

	t.Run("Conformance", func(t *testing.T) {
		layertest.Run(t, func(t *testing.T) layertest.Setup {
			prefix := newPrefix()
			opts := channellayer.RedisOptions{Capacity: 16, Expiry: 400 * time.Millisecond, HistorySize: 16}
			return layertest.Setup{
				Layer:       newClusterLayer(t, e.cl, prefix, opts),
				Peer:        func(t *testing.T) channellayer.Layer { return newClusterLayer(t, e.cl, prefix, opts) },
				Capacity:    16,
				Expiry:      400 * time.Millisecond,
				HistorySize: 16,
				// The restart rule's group is its first name: restart the
				// master that owns it (a master without replica: the
				// cluster is down until it is back).
				Restart: func(t *testing.T, down func()) {
					n := e.cl.Node(e.owner(t, "layertest-g-1"))
					n.Kill()
					down()
					n.Restart(t)
				},
			}
		})
		e.cl.WaitOK(t)
	})

	t.Run("Spread", func(t *testing.T) { testClusterSpread(t, e) })
	t.Run("OneShard", func(t *testing.T) { testClusterOneShard(t, e) })
	t.Run("ShardPipelines", func(t *testing.T) { testClusterShardPipelines(t, e) })
	t.Run("TwoProcesses", func(t *testing.T) { testClusterTwoProcesses(t, e) })
	t.Run("PubSubKilled", func(t *testing.T) { testClusterPubSubKilled(t, e) })
	t.Run("SlowFloor", func(t *testing.T) { testClusterSlowFloor(t, e) })
	t.Run("ManyGroupsRepaired", func(t *testing.T) {
		prefix := newPrefix()
		peer := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
		testManyGroupsRepaired(t, newClusterClient(t, e.cl.Addrs()), peer, prefix, func() { killPubSub(t, e.nodes...) })
	})
}

// TestRedisClusterFailure moves a slot and restarts a master under the
// layer, on a cluster of its own, beside TestRedisCluster.
func TestRedisClusterFailure(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t)
	t.Run("Reshard", func(t *testing.T) { testClusterReshard(t, e) })
	t.Run("NodeRestart", func(t *testing.T) { testClusterNodeRestart(t, e) })
}

// testClusterSpread: groups owned by each master keep their keys (history,
// presence) and their subscriptions on that master only.
func testClusterSpread(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	groups := e.groupsPerNode(t, "spread")
	for i, g := range groups {
		ch := newChan(t, a, g)
		m, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": i}))
		if err != nil {
			t.Fatal(err)
		}
		if got := recv(t, a, ch); got.ID != m.ID {
			t.Fatalf("group %s: got %q, want %q", g, got.ID, m.ID)
		}
		if err := a.Track(tctx(t, 5*time.Second), g, "k", nil, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for i, g := range groups {
		slot, err := e.cc.ClusterKeySlot(tctx(t, 5*time.Second), prefix+":{"+g+"}:h").Result()
		if err != nil {
			t.Fatal(err)
		}
		gch := prefix + ":{" + g + "}:g"
		for n, c := range e.nodes {
			keys, err := c.ClusterCountKeysInSlot(tctx(t, 5*time.Second), int(slot)).Result()
			if err != nil {
				t.Fatal(err)
			}
			subs, err := c.PubSubShardNumSub(tctx(t, 5*time.Second), gch).Result()
			if err != nil {
				t.Fatal(err)
			}
			wantKeys, wantSubs := int64(0), int64(0)
			if n == i {
				wantKeys, wantSubs = 3, 1 // history, presence hash and expiry set
			}
			if keys != wantKeys || subs[gch] != wantSubs {
				t.Errorf("group %s (slot %d, owner %d): node %d has %d keys and %d subscribers, want %d and %d",
					g, slot, i, n, keys, subs[gch], wantKeys, wantSubs)
			}
		}
	}
}

// testClusterOneShard: a burst of sends to one group is SPUBLISH and EVALSHA
// calls on the master that owns it, and on no other.
func testClusterOneShard(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	b := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	for owner, g := range e.groupsPerNode(t, "burst") {
		var chans []string
		for range 5 {
			chans = append(chans, newChan(t, a, g))
		}
		bch := newChan(t, b, g)
		// Load the script on the owner first.
		if _, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "warm", nil)); err != nil {
			t.Fatal(err)
		}
		before := make([]map[string]int, len(e.nodes))
		for n, c := range e.nodes {
			before[n] = commandCalls(t, c)
		}
		const burst = 20
		for i := range burst {
			if err := a.GroupSend(tctx(t, 5*time.Second), g, mustMsg(t, "plain", map[string]int{"n": i})); err != nil {
				t.Fatal(err)
			}
			if _, err := b.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "rec", map[string]int{"n": i})); err != nil {
				t.Fatal(err)
			}
		}
		for n, c := range e.nodes {
			after := commandCalls(t, c)
			want := map[string]int{"spublish": 0, "evalsha": 0, "publish": 0, "eval": 0}
			if n == owner {
				want["spublish"], want["evalsha"] = 2*burst, burst
			}
			for cmd, w := range want {
				if d := after[cmd] - before[n][cmd]; d != w {
					t.Errorf("group %s (owner %d): node %d got %d %s calls during the burst, want %d", g, owner, n, d, cmd, w)
				}
			}
		}
		for _, m := range []struct {
			l  channellayer.Layer
			ch string
		}{{a, chans[0]}, {a, chans[4]}, {b, bch}} {
			recv(t, m.l, m.ch) // warm
			for range 2 * burst {
				recv(t, m.l, m.ch)
			}
			silent(t, m.l, m.ch)
		}
	}
}

// testClusterShardPipelines: the presence writes of many groups owned by
// one master share its round trips, as on one Redis, and a master that
// does not answer holds up only its own.
func testClusterShardPipelines(t *testing.T, e *clusterEnv) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        e.cl.Addrs(),
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  10 * time.Second, // longer than the pause below
		WriteTimeout: time.Second,
		MaxRetries:   1,
	})
	t.Cleanup(func() { _ = cc.Close() })
	trips := &roundTrips{}
	cc.AddHook(trips)
	prefix := newPrefix()
	l := openRedisLayer(t, cc, prefix, channellayer.RedisOptions{}, 10*time.Second)

	// Groups owned by the first master, and one owned by another.
	addrs := e.cl.Addrs()
	owner := func(g string) string {
		m, err := cc.MasterForKey(tctx(t, 5*time.Second), prefix+":{"+g+"}:p")
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	const n = 40
	var mine []string
	other := ""
	for i := 0; (len(mine) < n || other == "") && i < 1000; i++ {
		g := "shard-" + strconv.Itoa(i)
		switch o := owner(g); {
		case o == addrs[0] && len(mine) < n:
			mine = append(mine, g)
		case o != addrs[0] && other == "":
			other = g
		}
	}
	if len(mine) < n || other == "" {
		t.Fatalf("found %d groups on %s and other %q in 1000 names", len(mine), addrs[0], other)
	}
	// A first command loads the client's table of commands (from any
	// master, the paused one too), as a node's first ones do.
	if err := l.Track(tctx(t, 5*time.Second), other, "k", nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	trips.reset()

	// The first master answers nobody for a while: its writes pile up.
	pause(t, addrs[0], 2*time.Second)
	errs := make(chan error, n)
	for _, g := range mine {
		go func() { errs <- l.Track(tctx(t, 10*time.Second), g, "k", nil, time.Minute) }()
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return trips.alone.Load()+trips.pipelines.Load() > 0 },
		"the first master's writes under way")
	if err := l.Track(tctx(t, time.Second), other, "k", nil, time.Minute); err != nil {
		t.Fatalf("a write to another master while the first does not answer: %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d writes to the paused master returned while it was paused", len(errs))
	}
	for range n {
		if err := testkit.Receive(t, errs, 10*time.Second, "a write to the first master"); err != nil {
			t.Fatal(err)
		}
	}
	alone, pipes, piped := trips.alone.Load(), trips.pipelines.Load(), trips.piped.Load()
	t.Logf("%d writes to %d groups of one master and 1 to another: %d round trips alone, %d pipelines carrying %d", n, n, alone, pipes, piped)
	if alone+piped != n+1 {
		t.Errorf("%d commands reached Redis for %d writes", alone+piped, n+1)
	}
	if alone+pipes > 4 {
		t.Errorf("%d round trips for %d concurrent writes to one master and one to another; want at most 4 (a master's groups share its pipeline)", alone+pipes, n+1)
	}
	for _, g := range append(mine, other) {
		ps, err := l.List(tctx(t, 5*time.Second), g)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 {
			t.Fatalf("group %s lists %d entries after one Track, want 1", g, len(ps))
		}
	}
}

// testClusterTwoProcesses: two layers on the cluster exchange group and
// directed messages on every shard; presence and history are shared.
func testClusterTwoProcesses(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	b := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	ctx := tctx(t, 10*time.Second)
	for _, g := range e.groupsPerNode(t, "two") {
		ach, bch := newChan(t, a, g), newChan(t, b, g)
		var ids []string
		for i := range 6 {
			sender := a
			if i%2 == 1 {
				sender = b
			}
			m, err := sender.GroupSendRecorded(ctx, g, mustMsg(t, "chat", map[string]int{"n": i}))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.ID)
		}
		for _, m := range []struct {
			l  channellayer.Layer
			ch string
		}{{a, ach}, {b, bch}} {
			for i := range 6 {
				if got := recv(t, m.l, m.ch); got.ID != ids[i] || seqOf(t, got) != i {
					t.Fatalf("group %s: got %s, want message %d (%s)", g, got.Body, i, ids[i])
				}
			}
			silent(t, m.l, m.ch)
		}
		since, err := b.Since(ctx, g, ids[2])
		if err != nil || len(since) != 3 || since[0].ID != ids[3] {
			t.Fatalf("group %s: Since = %v, %v", g, since, err)
		}
		if err := a.Track(ctx, g, "alice", []byte("a"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := b.Track(ctx, g, "bob", nil, time.Minute); err != nil {
			t.Fatal(err)
		}
		list, err := b.List(ctx, g)
		if err != nil || len(list) != 2 || list[0].Key != "alice" || list[1].Key != "bob" {
			t.Fatalf("group %s: List = %v, %v", g, list, err)
		}
		// Directed sends both ways.
		if err := a.Send(ctx, bch, mustMsg(t, "direct", map[string]string{"to": "b"})); err != nil {
			t.Fatalf("Send a→b: %v", err)
		}
		if err := b.Send(ctx, ach, mustMsg(t, "direct", map[string]string{"to": "a"})); err != nil {
			t.Fatalf("Send b→a: %v", err)
		}
		if m := recv(t, b, bch); m.Type != "direct" {
			t.Fatalf("b got %q", m.Type)
		}
		if m := recv(t, a, ach); m.Type != "direct" {
			t.Fatalf("a got %q", m.Type)
		}
	}
}

// testClusterPubSubKilled kills every pub/sub connection on every master in
// the middle of a stream of recorded sends to groups on all shards: every
// message arrives once and in order (gap repair from history).
func testClusterPubSubKilled(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	b := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	groups := e.groupsPerNode(t, "killed")
	type member struct {
		l  *channellayer.Redis
		ch string
		g  int
	}
	var members []member
	for i, g := range groups {
		members = append(members, member{a, newChan(t, a, g), i}, member{b, newChan(t, b, g), i})
	}
	const total = 30
	for i := range total {
		if i == total/3 {
			killPubSub(t, e.nodes...)
		}
		for _, g := range groups {
			msg := mustMsg(t, "chat", map[string]int{"n": i})
			testkit.EventuallyNil(t, 5*time.Second, func() error {
				_, err := a.GroupSendRecorded(tctx(t, time.Second), g, msg)
				return err
			}, "recorded send")
		}
	}
	for _, m := range members {
		for i := range total {
			if got := seqOf(t, recv(t, m.l, m.ch)); got != i {
				t.Fatalf("group %s: got message %d, want %d", groups[m.g], got, i)
			}
		}
		silent(t, m.l, m.ch)
	}
}

// nodeID returns the cluster node ID of node i.
func (e *clusterEnv) nodeID(t testing.TB, i int) string {
	t.Helper()
	id, err := e.nodes[i].ClusterMyID(tctx(t, 5*time.Second)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// moveSlot moves a slot with its keys from one master to another, as
// redis-cli --cluster reshard does.
func (e *clusterEnv) moveSlot(t testing.TB, slot, from, to int) {
	t.Helper()
	ctx := tctx(t, 10*time.Second)
	fromID, toID := e.nodeID(t, from), e.nodeID(t, to)
	src, dst := e.nodes[from], e.nodes[to]
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	host, port, _ := strings.Cut(e.cl.Addrs()[to], ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	for _, c := range append([]*redis.Client{dst, src}, e.nodes...) {
		must(c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	}
}

// testClusterReshard moves the slot of a group to another master while two
// layers have members in it: the owner drops their subscriptions, and they
// subscribe on the new owner, missing nothing that was recorded.
func testClusterReshard(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	b := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	g := e.groupsPerNode(t, "reshard")[0]
	ach, bch := newChan(t, a, g), newChan(t, b, g)
	n := 0
	send := func() {
		t.Helper()
		msg := mustMsg(t, "chat", map[string]int{"n": n})
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			_, err := a.GroupSendRecorded(tctx(t, time.Second), g, msg)
			return err
		}, "recorded send")
		n++
	}
	for range 5 {
		send()
	}
	slot, err := e.cc.ClusterKeySlot(tctx(t, 5*time.Second), prefix+":{"+g+"}:g").Result()
	if err != nil {
		t.Fatal(err)
	}
	e.moveSlot(t, int(slot), 0, 1)
	gch := prefix + ":{" + g + "}:g"
	testkit.EventuallyNil(t, 5*time.Second, func() error {
		subs, err := e.nodes[1].PubSubShardNumSub(tctx(t, time.Second), gch).Result()
		if err != nil {
			return err
		}
		if subs[gch] != 2 {
			return fmt.Errorf("%d subscribers on the new owner, want 2", subs[gch])
		}
		return nil
	}, "subscriptions on the new owner")
	for range 5 {
		send()
	}
	for _, m := range []struct {
		l  *channellayer.Redis
		ch string
	}{{a, ach}, {b, bch}} {
		for i := range n {
			if got := seqOf(t, recv(t, m.l, m.ch)); got != i {
				t.Fatalf("got message %d, want %d", got, i)
			}
		}
		silent(t, m.l, m.ch)
	}
	if list, err := e.nodes[0].PubSubShardNumSub(tctx(t, time.Second), gch).Result(); err != nil || list[gch] != 0 {
		t.Fatalf("old owner still has %v subscribers (%v)", list[gch], err)
	}
	e.moveSlot(t, int(slot), 1, 0) // leave the cluster as it was
}

// testClusterNodeRestart kills one master (no replica: it stays down, and
// the cluster with it) and restarts it on its port: the layers report the
// outage, fail fast, and work again on every shard by themselves.
func testClusterNodeRestart(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	b := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{})
	groups := e.groupsPerNode(t, "restart")
	victim := 2
	type member struct {
		l  *channellayer.Redis
		ch string
	}
	members := make([][]member, len(groups))
	for i, g := range groups {
		members[i] = []member{{a, newChan(t, a, g)}, {b, newChan(t, b, g)}}
	}
	e.cl.Node(victim).Kill()
	start := time.Now()
	for _, l := range []*channellayer.Redis{a, b} {
		testkit.EventuallyNil(t, 5*time.Second, func() error {
			if err := l.Check(tctx(t, time.Second)); !errors.Is(err, channellayer.ErrUnavailable) {
				return fmt.Errorf("Check = %v, want ErrUnavailable", err)
			}
			return nil
		}, "not ready while a master is down")
	}
	t.Logf("outage noticed after %v", time.Since(start))
	callStart := time.Now()
	_, err := a.GroupSendRecorded(tctx(t, 3*time.Second), groups[victim], mustMsg(t, "x", nil))
	if !errors.Is(err, channellayer.ErrUnavailable) {
		t.Errorf("GroupSendRecorded while the owner is down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(callStart); d > 500*time.Millisecond {
		t.Errorf("GroupSendRecorded while the owner is down took %v", d)
	}

	e.cl.Node(victim).Restart(t)
	restarted := time.Now()
	for _, l := range []*channellayer.Redis{a, b} {
		testkit.EventuallyNil(t, 20*time.Second, func() error { return l.Check(tctx(t, time.Second)) }, "ready after the restart")
	}
	t.Logf("ready again %v after the restart", time.Since(restarted))
	for i, g := range groups {
		msg := mustMsg(t, "after", map[string]int{"n": i})
		var sent channellayer.Message
		testkit.EventuallyNil(t, 10*time.Second, func() error {
			var err error
			sent, err = b.GroupSendRecorded(tctx(t, time.Second), g, msg)
			return err
		}, "group "+g+": recorded send after the restart")
		for _, m := range members[i] {
			got := recv(t, m.l, m.ch)
			if got.ID != sent.ID {
				t.Fatalf("group %s: got %s, want %s", g, got.Body, sent.Body)
			}
			silent(t, m.l, m.ch)
		}
	}
	t.Logf("every shard works again %v after the restart", time.Since(restarted))
	if list := e.cl.Addrs(); !slices.Contains(list, e.cl.Node(victim).Addr()) {
		t.Fatal("the restarted node moved")
	}
}

// testClusterSlowFloor: a group placed on a shard connection while its
// master is too slow to answer the history read before it (paused longer
// than the layer's own calls wait) is subscribed all the same, and the
// connection, which already carries a group of another slot, lives on.
// When the subscribe was written with the context the slow read had used
// up, go-redis replaced the connection and subscribed it to both groups in
// one SSUBSCRIBE, refused with CROSSSLOT: the connection died, and the
// layer was not ready until every group of the shard was placed again.
func testClusterSlowFloor(t *testing.T, e *clusterEnv) {
	prefix := newPrefix()
	var logs harness.Log
	a := newClusterLayer(t, e.cl, prefix, channellayer.RedisOptions{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	first := e.groupsPerNode(t, "floor")[0]
	var second string
	for i := 0; second == "" && i < 1000; i++ {
		if g := "floor-b-" + strconv.Itoa(i); e.owner(t, g) == 0 {
			second = g
		}
	}
	s1, _ := e.cc.ClusterKeySlot(tctx(t, 5*time.Second), "x:{"+first+"}:g").Result()
	s2, _ := e.cc.ClusterKeySlot(tctx(t, 5*time.Second), "x:{"+second+"}:g").Result()
	if second == "" || s1 == s2 {
		t.Fatalf("no second group of node 0 in another slot (%q %d, %q %d)", first, s1, second, s2)
	}
	ch1 := newChan(t, a, first)
	if err := e.nodes[0].Do(tctx(t, 5*time.Second), "CLIENT", "PAUSE", "2600", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	ch2 := newChan(t, a, second) // waits for the pause to end
	for i, g := range []string{first, second} {
		if _, err := a.GroupSendRecorded(tctx(t, 5*time.Second), g, mustMsg(t, "chat", map[string]int{"n": i})); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range []string{ch1, ch2} {
		if got := seqOf(t, recv(t, a, ch)); got != i {
			t.Fatalf("channel %d: got message %d, want %d", i, got, i)
		}
	}
	if out := logs.String(); strings.Contains(out, "connection lost") || strings.Contains(out, "CROSSSLOT") {
		t.Fatalf("the shard connection died:\n%s", out)
	}
}
