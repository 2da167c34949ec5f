package channellayer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a Redis layer. The zero value is ready to use.
type RedisOptions struct {
	// Capacity is how many messages a channel holds. Defaults to 100.
	Capacity int
	// Expiry is how long a message waits in a channel. Defaults to 60 s.
	Expiry time.Duration
	// HistorySize is how many messages a group's history keeps. Defaults to 100.
	HistorySize int
	// Prefix starts every Redis key and pub/sub channel of the layer; layers
	// that share a prefix share their groups. It must not contain "{", "}"
	// or a newline. Defaults to "chatterpro".
	Prefix string
	// Logger receives the layer's connection events. Defaults to slog.Default().
	Logger *slog.Logger
	// Replicas is how many replicas must have a recorded message before it
	// is acknowledged: after each batch of records the layer asks Redis to
	// WAIT for them (one WAIT per round trip, bounded by ReplicaTimeout),
	// and publishes the batch only once they have it, so that a message
	// acknowledged to its sender survives a failover to a replica. A batch
	// they do not confirm in time fails with ErrUnavailable (it may be
	// kept, and seen by those who resume from history). Not supported on a
	// Redis Cluster. Defaults to 0: a record is acknowledged once the
	// primary has it.
	Replicas int
	// ReplicaTimeout is how long a record waits for Replicas. Defaults to 1 s.
	ReplicaTimeout time.Duration
	// GroupTTL is how long a group's history is kept after its last
	// recorded message; every record sets its expiry again (PEXPIRE).
	// Presence keys expire by themselves once nobody refreshes their
	// entries (see Track). Defaults to 0: history is kept for ever.
	GroupTTL time.Duration
	// RecordLinger, if positive, lets a record that does not wait for its
	// result (Recorder) wait up to that long for others while the node
	// records steadily, so that more share a round trip. Defaults to 0:
	// a record goes at once when no round trip is under way, and what
	// queues while one is goes in the next, with no timer (see pipeline).
	RecordLinger time.Duration
	// NoWait makes NewRedis return at once, whether or not Redis can be
	// reached yet: the layer starts not ready (Check fails, calls that need
	// Redis fail with ErrUnavailable) and connects by itself, as after a
	// Redis restart. Defaults to waiting (see NewRedis).
	NoWait bool
}

// Redis is the layer for many processes sharing one Redis or one Redis
// Cluster. It implements Layer, History, Recorder, Presence,
// PresenceRefresher, PresenceLister and Checker.
//
// Every process keeps its channels in memory, as Memory does, and holds one
// pub/sub connection (in a cluster, one per shard it uses): it subscribes to
// a group's pub/sub channel while the group has local members, and to a
// channel of its own for Send from other processes. A group send is one
// PUBLISH (SPUBLISH in a cluster), whatever the number of members; each
// process decodes it once and hands it to its local members.
//
// A group's keys share one hash tag, so a group lives on one cluster shard:
// "<prefix>:{<group>}:h" (history stream), ":p" (presence hash), ":e"
// (presence expiry, a sorted set of ms timestamps), ":k" (record keys, see
// GroupSendRecordedOnce), ":g" (pub/sub channel). A process's channel is
// "<prefix>:proc:{<process id>}". What the layer stores and publishes
// names its format version, so that nodes of two successive formats share
// a deployment (see formatVersion).
//
// While Redis is away the layer is not ready (Check fails), and calls that
// need Redis fail at once with ErrUnavailable. It reconnects and resubscribes
// by itself, then delivers from history what its groups recorded meanwhile.
type Redis struct {
	client      redis.UniversalClient
	cc          *redis.ClusterClient // nil with one Redis
	cluster     bool
	local       *local
	log         *slog.Logger
	prefix      string
	historySize int
	procChan    string        // this process's pub/sub channel
	replicas    int           // RedisOptions.Replicas
	groupTTL    time.Duration // RedisOptions.GroupTTL
	// historySize and groupTTL in ms as the record scripts take them,
	// made interface values once (see recordBatch.queue).
	sizeArg, ttlArg any

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	stop   chan struct{} // closed by Close
	wg     sync.WaitGroup
	pipe   *pipelines    // publishes
	single *psConn       // the pub/sub connection with one Redis; nil in a cluster
	kick   chan struct{} // capacity 1: wakes the subscriber

	mu      sync.Mutex
	closed  bool
	ready   bool
	changed chan struct{} // closed and replaced at every change of ready
	// Why the layer is still not ready, as last logged, and when: a
	// failure that goes on is logged again when it changes, or once in a
	// while (see setReady).
	downErr string
	downLog time.Time
	subs    map[string]*groupSub // wanted subscriptions, by pub/sub channel
	pending map[string]string    // pub/sub channel → group, for the subscriber to reconcile
	proc    *groupSub            // cluster: the subscription of procChan (also in subs)
	dead    []*psConn            // cluster: shard connections that failed, for the subscriber

	holdMu sync.Mutex       // guards holds; held while delivering what it guards
	holds  map[string]*hold // by group: local delivery held for replicas (see holdGroup)
	moved  []moved          // cluster: channels a shard dropped, for the subscriber
}

// groupSub is the subscription of one group with local members.
type groupSub struct {
	group   string
	channel string
	ready   chan struct{} // closed when Redis confirmed the subscription
	proc    bool          // the process channel (cluster), not a group

	// Guarded by Redis.mu.
	conn      *psConn // where it is issued
	barrier   uint64  // confirmed by the pong of any barrier >= this on conn; 0: not yet sent
	confirmed bool
	live      bool     // confirmed on conn, which still carries it (cluster)
	floor     streamID // the history's last ID before subscribing
	hasFloor  bool

	// Owned by the receive loop of conn (handed over with it, under Redis.mu).
	last    streamID // the last recorded message delivered locally
	hasLast bool
}

var (
	_ Layer    = (*Redis)(nil)
	_ History  = (*Redis)(nil)
	_ Recorder = (*Redis)(nil)
	_ Presence = (*Redis)(nil)
	_ Checker  = (*Redis)(nil)
)

// Timing of the Redis layer.
const (
	redisBackoffMin = 50 * time.Millisecond
	redisBackoffMax = time.Second
	// redisHealth is how long the pub/sub connection may be idle before
	// the layer pings it.
	redisHealth = time.Second
	// redisReceiveWait bounds one read of a pub/sub connection (see
	// receiveLoop): long enough that a starved process is never cut off
	// in the middle of a message.
	redisReceiveWait = 30 * time.Second
	// redisOpTimeout bounds the layer's own calls (not the caller's).
	redisOpTimeout = 2 * time.Second
	// redisBatchTimeout bounds a pipeline's batch of callers' commands
	// (see pipeline): as long as the longest deadline callers commonly
	// give (the presence tracker's 5 s), so that a Redis slow to answer
	// under load does not fail a whole batch that it has run anyway.
	redisBatchTimeout = 5 * time.Second
	// redisDownLog is how often an unchanged reason for not being ready
	// is logged again.
	redisDownLog = 30 * time.Second
)

var _ ExceptSender = (*Redis)(nil)

// NewRedis returns a layer on a Redis client that the caller builds and owns:
// Close does not close the client. With a *redis.ClusterClient the layer
// uses sharded pub/sub (SPUBLISH, SSUBSCRIBE on the shard that owns each
// channel); any other client is one Redis. NewRedis waits until Redis has
// confirmed the layer's subscription; if ctx ends first it returns an error
// wrapping ErrUnavailable. With RedisOptions.NoWait it does not wait.
//
// Build the client with ContextTimeoutEnabled and read and write timeouts
// of 5 s or more, as the chatterpro command does: each call then waits as
// long as its context allows, and a Redis slow to answer under load is not
// cut off at a shorter fixed timeout and sent the same commands again.
func NewRedis(ctx context.Context, client redis.UniversalClient, opts RedisOptions) (*Redis, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: redis layer needs a client", ErrInvalid)
	}
	if opts.Capacity < 0 || opts.Expiry < 0 || opts.HistorySize < 0 || opts.Replicas < 0 || opts.ReplicaTimeout < 0 || opts.GroupTTL < 0 {
		return nil, fmt.Errorf("%w: redis layer options must not be negative", ErrInvalid)
	}
	if _, cluster := client.(*redis.ClusterClient); cluster && opts.Replicas > 0 {
		return nil, fmt.Errorf("%w: redis layer: Replicas is not supported on a Redis Cluster", ErrInvalid)
	}
	if opts.ReplicaTimeout == 0 {
		opts.ReplicaTimeout = time.Second
	}
	if strings.ContainsAny(opts.Prefix, "{}\n") {
		return nil, fmt.Errorf("%w: redis key prefix %q must not contain '{', '}' or a newline", ErrInvalid, opts.Prefix)
	}
	if opts.HistorySize == 0 {
		opts.HistorySize = DefaultHistorySize
	}
	if opts.Prefix == "" {
		opts.Prefix = "chatterpro"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cc, cluster := client.(*redis.ClusterClient)
	lctx, cancel := context.WithCancel(context.Background())
	l := newLocal(opts.Capacity, opts.Expiry, processTag)
	r := &Redis{
		client:      client,
		cc:          cc,
		cluster:     cluster,
		local:       l,
		log:         opts.Logger,
		prefix:      opts.Prefix,
		historySize: opts.HistorySize,
		replicas:    opts.Replicas,
		groupTTL:    opts.GroupTTL,
		sizeArg:     opts.HistorySize,
		ttlArg:      opts.GroupTTL.Milliseconds(),
		procChan:    opts.Prefix + ":proc:{" + strings.TrimSuffix(l.prefix, "!") + "}",
		ctx:         lctx,
		cancel:      cancel,
		stop:        make(chan struct{}),
		kick:        make(chan struct{}, 1),
		changed:     make(chan struct{}),
		subs:        make(map[string]*groupSub),
		pending:     make(map[string]string),
		holds:       make(map[string]*hold),
	}
	r.pipe = newPipelines(lctx, client, opts.Replicas, opts.ReplicaTimeout, opts.RecordLinger)
	if cluster {
		r.proc = &groupSub{channel: r.procChan, proc: true, ready: make(chan struct{})}
		r.subs[r.procChan] = r.proc
		r.pending[r.procChan] = ""
		r.wg.Add(1)
		go r.subscriber()
		r.wake()
	} else {
		r.single = &psConn{r: r, ps: client.Subscribe(lctx), ctx: lctx, cancel: cancel}
		r.wg.Add(2)
		go r.single.receiveLoop()
		go r.subscriber()
	}
	if opts.NoWait {
		return r, nil
	}
	for {
		r.mu.Lock()
		ready, changed := r.ready, r.changed
		r.mu.Unlock()
		if ready {
			r.loadScripts(ctx)
			return r, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			_ = r.Close(context.Background())
			return nil, fmt.Errorf("channellayer: redis layer: waiting for Redis: %v: %w", ctx.Err(), ErrUnavailable)
		}
	}
}

// Keys and channels. A group name is escaped inside the hash tag so that the
// tag is the whole group, whatever braces it contains.

func escapeGroup(group string) string {
	if !strings.ContainsAny(group, "%{}") {
		return group
	}
	var b strings.Builder
	for i := 0; i < len(group); i++ {
		switch c := group[i]; c {
		case '%':
			b.WriteString("%25")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (r *Redis) groupKey(group, kind string) string {
	return r.prefix + ":{" + escapeGroup(group) + "}:" + kind
}

func (r *Redis) historyKey(group string) string  { return r.groupKey(group, "h") }
func (r *Redis) presenceKey(group string) string { return r.groupKey(group, "p") }
func (r *Redis) expiryKey(group string) string   { return r.groupKey(group, "e") }
func (r *Redis) groupChan(group string) string   { return r.groupKey(group, "g") }
func (r *Redis) procChanOf(process string) string {
	return r.prefix + ":proc:{" + process + "}"
}

// Envelopes. A published message is "v2:<target>\n<id>\n<len(type)>\n<type><body>":
// "v2:" names the format version (see formatVersion; format 1 had none),
// target is the channel of a directed send (for a group: the channel a
// GroupSendExcept skips, or empty), id the
// message's ID. Recorded messages, the only ones that take part in gap
// repair and duplicate suppression, come in the record script's envelope
// (see parseRecorded); an ID marked with a leading "!" is one recorded by
// a node that published each record alone, as earlier versions did.

// envelope returns the envelope of m in this code's format.
func envelope(target string, m Message) string {
	return envelopeIn(formatVersion, target, m)
}

// envelopeTo returns the envelope of a directed send to channel, in the
// format its process reads.
func envelopeTo(process, channel string, m Message) string {
	return envelopeIn(min(processFormat(process), formatVersion), channel, m)
}

// envelopeIn returns the envelope of m in format version v: 1, or this
// code's.
func envelopeIn(v int, target string, m Message) string {
	t := strconv.Itoa(len(m.Type))
	var b strings.Builder
	b.Grow(len(target) + len(m.ID) + len(t) + len(m.Type) + len(m.Body) + 7)
	if v > 1 {
		b.WriteByte('v')
		b.WriteString(formatTag)
		b.WriteByte(':')
	}
	b.WriteString(target)
	b.WriteByte('\n')
	if !strings.HasPrefix(m.ID, "!") && !strings.HasPrefix(m.ID, "*") { // marks of recorded messages
		b.WriteString(m.ID)
	}
	b.WriteByte('\n')
	b.WriteString(t)
	b.WriteByte('\n')
	b.WriteString(m.Type)
	b.Write(m.Body)
	return b.String()
}

func parseEnvelope(p string) (target string, m Message, recorded, ok bool) {
	line, rest, ok1 := strings.Cut(p, "\n")
	_, target = cutFormat(line)
	id, rest, ok2 := strings.Cut(rest, "\n")
	ls, rest, ok3 := strings.Cut(rest, "\n")
	n, err := strconv.Atoi(ls)
	if !ok1 || !ok2 || !ok3 || err != nil || n <= 0 || n >= len(rest) {
		return "", Message{}, false, false
	}
	id, recorded = strings.CutPrefix(id, "!")
	return target, Message{Type: rest[:n], ID: id, Body: []byte(rest[n:])}, recorded, true
}

// idSep is what withID puts between the inserted "id" field and the rest.
func idSep(body []byte) string {
	if rest := bytes.TrimSpace(body[1:]); len(rest) > 0 && rest[0] != '}' {
		return ","
	}
	return ""
}

// Errors.

// fail translates an error of a Redis call: the caller's cancelled context
// as is, anything else as ErrUnavailable (go-redis types never leak).
func (r *Redis) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("channellayer: redis %s: %v: %w", op, err, ErrUnavailable)
}

// usable returns ErrClosed after Close and ErrUnavailable while Redis is away,
// so that calls fail at once instead of waiting for a connection.
func (r *Redis) usable(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	closed, ready := r.closed, r.ready
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !ready {
		return fmt.Errorf("channellayer: redis %s: not connected: %w", op, ErrUnavailable)
	}
	return nil
}

func checkMessage(msg Message) error {
	if msg.Type == "" || len(msg.Body) == 0 || msg.Body[0] != '{' {
		return fmt.Errorf("%w: message needs a type and a body (use NewMessage)", ErrInvalid)
	}
	return nil
}

// Layer.

func (r *Redis) NewChannel(ctx context.Context) (string, error) {
	return r.NewChannelCapacity(ctx, 0)
}

// NewChannelCapacity implements ChannelCapacity.
func (r *Redis) NewChannelCapacity(ctx context.Context, capacity int) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	return r.local.newChannel(capacity)
}

func (r *Redis) Send(ctx context.Context, channel string, msg Message) error {
	if err := checkMessage(msg); err != nil {
		return err
	}
	if r.local.owns(channel) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.isClosed() {
			return ErrClosed
		}
		return r.local.send(channel, msg)
	}
	process, ok := processOf(channel)
	if !ok || strings.ContainsAny(channel, "\n{}") {
		return fmt.Errorf("sending to %q: %w", channel, ErrNoChannel)
	}
	if err := r.usable(ctx, "send"); err != nil {
		return err
	}
	n, err := r.publish(ctx, r.procChanOf(process), envelopeTo(process, channel, msg))
	if err != nil {
		return r.fail(ctx, "send", err)
	}
	if n == 0 {
		return fmt.Errorf("sending to %s: process gone: %w", channel, ErrNoChannel)
	}
	return nil
}

func (r *Redis) Receive(ctx context.Context, channel string) (Message, error) {
	return r.local.receive(ctx, channel)
}

func (r *Redis) GroupAdd(ctx context.Context, group, channel string) error {
	if group == "" {
		return fmt.Errorf("%w: empty group name", ErrInvalid)
	}
	if err := r.usable(ctx, "group add"); err != nil {
		return err
	}
	if _, err := r.local.groupAdd(group, channel); err != nil {
		return err
	}
	ch := r.groupChan(group)
	r.mu.Lock()
	s := r.subs[ch]
	if s == nil && r.local.hasGroup(group) {
		s = &groupSub{group: group, channel: ch, ready: make(chan struct{})}
		r.subs[ch] = s
		r.pending[ch] = group
	}
	changed := r.changed
	r.mu.Unlock()
	if s == nil { // discarded meanwhile
		return fmt.Errorf("adding %s to group %q: %w", channel, group, ErrNoChannel)
	}
	r.wake()
	var err error
	select {
	case <-s.ready:
		return nil
	case <-changed:
		err = fmt.Errorf("channellayer: redis group add: connection lost: %w", ErrUnavailable)
	case <-ctx.Done():
		err = ctx.Err()
	case <-r.stop:
		err = ErrClosed
	}
	select {
	case <-s.ready: // confirmed after all
		return nil
	default:
	}
	r.groupDiscard(group, channel)
	return err
}

func (r *Redis) GroupDiscard(ctx context.Context, group, channel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.groupDiscard(group, channel)
	return nil
}

func (r *Redis) groupDiscard(group, channel string) {
	if r.local.groupDiscard(group, channel) {
		r.unwant(group)
	}
}

// unwant drops the subscription of a group that has no local member left.
func (r *Redis) unwant(group string) {
	ch := r.groupChan(group)
	r.mu.Lock()
	if r.subs[ch] != nil && !r.local.hasGroup(group) {
		delete(r.subs, ch)
		r.pending[ch] = group
	}
	r.mu.Unlock()
	if r.cluster {
		r.updateReady(nil) // a group that was down may have been the last one
	}
	r.wake()
}

func (r *Redis) GroupSend(ctx context.Context, group string, msg Message) error {
	if err := checkMessage(msg); err != nil {
		return err
	}
	if err := r.usable(ctx, "group send"); err != nil {
		return err
	}
	if _, err := r.publish(ctx, r.groupChan(group), envelope("", msg)); err != nil {
		return r.fail(ctx, "group send", err)
	}
	return nil
}

// GroupSendExcept implements ExceptSender: the envelope names the excepted
// channel where a directed send names its target, and only the process that
// owns it skips it (a process of an earlier version ignores the field, and
// owns no channel of this one).
func (r *Redis) GroupSendExcept(ctx context.Context, group string, msg Message, except string) error {
	if err := checkMessage(msg); err != nil {
		return err
	}
	if err := r.usable(ctx, "group send"); err != nil {
		return err
	}
	if _, err := r.publish(ctx, r.groupChan(group), envelope(except, msg)); err != nil {
		return r.fail(ctx, "group send", err)
	}
	return nil
}

// publish publishes payload, in a pipeline with the publishes of other
// callers if a round trip is under way (see pipeline).
func (r *Redis) publish(ctx context.Context, channel, payload string) (int64, error) {
	cmd, err := r.pipe.of(ctx, channel).do(ctx, func(ctx context.Context, c redis.Cmdable) redis.Cmder {
		if r.cluster {
			return c.SPublish(ctx, channel, payload)
		}
		return c.Publish(ctx, channel, payload)
	})
	if err != nil {
		return 0, err
	}
	return cmd.(*redis.IntCmd).Result()
}

func (r *Redis) DiscardChannel(ctx context.Context, channel string) error {
	for _, g := range r.local.discard(channel) {
		r.unwant(g)
	}
	return nil
}

// Close stops the layer's goroutines, waiting for them until ctx ends, and
// frees every channel. It does not close the Redis client.
func (r *Redis) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.ready = false
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	r.pipe.closing() // before the cancel: no batch starts on a cancelled context
	close(r.stop)
	r.cancel()
	r.pipe.wait()
	if r.single != nil {
		_ = r.single.ps.Close()
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	r.local.close()
	return err
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Check implements Checker: nil while Redis answers PING (in a cluster:
// every master reports cluster_state:ok) and the layer's pub/sub
// connections are up.
func (r *Redis) Check(ctx context.Context) error {
	if err := r.usable(ctx, "check"); err != nil {
		return err
	}
	if r.cc != nil {
		return r.checkCluster(ctx)
	}
	if err := r.client.Ping(ctx).Err(); err != nil {
		return r.fail(ctx, "ping", err)
	}
	return nil
}

// History.

// Recent implements History.
func (r *Redis) Recent(ctx context.Context, group string, n int) ([]Message, error) {
	if err := r.usable(ctx, "history"); err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil
	}
	n = min(n, r.historySize) // the stream may hold a few more (see recordScript)
	key := r.historyKey(group)
	cmd, err := r.pipe.of(ctx, key).do(ctx, func(ctx context.Context, c redis.Cmdable) redis.Cmder {
		return c.XRevRangeN(ctx, key, "+", "-", int64(n))
	})
	var xs []redis.XMessage
	if err == nil {
		xs, err = cmd.(*redis.XMessageSliceCmd).Result()
	}
	if err != nil {
		return nil, r.fail(ctx, "history", err)
	}
	slices.Reverse(xs)
	return streamMessages(xs), nil
}

// Since implements History.
func (r *Redis) Since(ctx context.Context, group, id string) ([]Message, error) {
	if !ValidID(id) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("history of %q since %q: %w", group, id, ErrUnknownID)
	}
	if err := r.usable(ctx, "history"); err != nil {
		return nil, err
	}
	// One read from id itself: the first entry proves id is still kept.
	key := r.historyKey(group)
	cmd, err := r.pipe.of(ctx, key).do(ctx, func(ctx context.Context, c redis.Cmdable) redis.Cmder {
		return c.XRangeN(ctx, key, id, "+", int64(r.historySize)+1)
	})
	var xs []redis.XMessage
	if err == nil {
		xs, err = cmd.(*redis.XMessageSliceCmd).Result()
	}
	if err != nil {
		return nil, r.fail(ctx, "history", err)
	}
	// The stream may hold more than the history size (see recordScript):
	// id is kept only if fewer than that many came after it.
	if len(xs) == 0 || xs[0].ID != id || len(xs) > r.historySize {
		return nil, fmt.Errorf("history of %q since %q: %w", group, id, ErrUnknownID)
	}
	return streamMessages(xs[1:]), nil
}

func streamMessages(xs []redis.XMessage) []Message {
	if len(xs) == 0 {
		return nil
	}
	out := make([]Message, 0, len(xs))
	for _, x := range xs {
		if m, ok := streamMessage(x); ok {
			out = append(out, m)
		}
	}
	return out
}

func streamMessage(x redis.XMessage) (Message, bool) {
	t, _ := x.Values["t"].(string)
	d, _ := x.Values["d"].(string)
	if t == "" || len(d) == 0 || d[0] != '{' {
		return Message{}, false
	}
	return Message{Type: t, ID: x.ID, Body: withID([]byte(d), x.ID)}, true
}

// Presence.

// presenceKeep is how long a group's presence keys outlive their last
// Track at least: long enough for every expired entry to be announced by
// Expire. A write that finds less than that left sets twice that, so that
// refreshes every TTL/3 do not each set the keys' expiry again (it was
// one command in four of a cluster's presence upkeep).
func presenceKeep(ttl time.Duration) int64 {
	return (2*ttl + time.Minute).Milliseconds()
}

// pipedScripts are scripts sent by SHA in pipelines (EVALSHA). A server
// that does not know one answers NOSCRIPT, and each caller then sends the
// text on a connection of its own: the joins of a node started while its
// clients wait would do that by the hundred. NewRedis loads them; after a
// restart of Redis the first calls send them whole again.
var pipedScripts = []*redis.Script{trackScript, recordScript}

// loadScripts loads pipedScripts (on every shard of a cluster). A failure
// only costs the calls that find them missing a second round trip.
func (r *Redis) loadScripts(ctx context.Context) {
	for _, s := range pipedScripts {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			r.log.Debug("channellayer: loading a script failed; the first calls send it whole", "err", err)
			return
		}
	}
}

// Track implements Presence. Expiry times come from this process's clock.
//
// Track and the history reads of a join (Recent, Since) go in the
// pipeline of their key with the publishes and the other calls under way
// (see pipeline), not on a connection of their own from the client's
// pool: in a reconnect storm (12 500 people of a dead node coming back to
// seven others, 64 joins at once on each) joins waited for a free pool
// connection, and each took two round trips of its own on a machine short
// of CPU; now the joins that queue meanwhile share the next round trip.
func (r *Redis) Track(ctx context.Context, group, key string, info []byte, ttl time.Duration) error {
	if group == "" || key == "" || ttl <= 0 {
		return fmt.Errorf("%w: presence needs a group, a key and a positive TTL", ErrInvalid)
	}
	if err := r.usable(ctx, "presence track"); err != nil {
		return err
	}
	keys := []string{r.presenceKey(group), r.expiryKey(group)}
	args := []any{key, info, time.Now().Add(ttl).UnixMilli(), presenceKeep(ttl)}
	cmd, err := r.pipe.of(ctx, keys[0]).do(ctx, func(ctx context.Context, c redis.Cmdable) redis.Cmder {
		return trackScript.EvalSha(ctx, c, keys, args...)
	})
	if err == nil {
		err = cmd.Err()
		if redis.HasErrorPrefix(err, "NOSCRIPT") { // Redis lost its scripts (a restart): send it whole
			err = trackScript.Eval(ctx, r.client, keys, args...).Err()
		}
	}
	if err != nil {
		return r.fail(ctx, "presence track", err)
	}
	return nil
}

// Untrack implements Presence.
func (r *Redis) Untrack(ctx context.Context, group, key string) error {
	if err := r.usable(ctx, "presence untrack"); err != nil {
		return err
	}
	err := untrackScript.Run(ctx, r.client, []string{r.presenceKey(group), r.expiryKey(group)}, key).Err()
	if err != nil {
		return r.fail(ctx, "presence untrack", err)
	}
	return nil
}

// List implements Presence.
func (r *Redis) List(ctx context.Context, group string) ([]Member, error) {
	return r.presence(ctx, group, listScript, "presence list")
}

// Expire implements Presence.
func (r *Redis) Expire(ctx context.Context, group string) ([]Member, error) {
	swept, err := r.SweepAll(ctx, []string{group})
	if err != nil {
		return nil, err
	}
	return swept[group].Expired, nil
}

func (r *Redis) presence(ctx context.Context, group string, script *redis.Script, op string) ([]Member, error) {
	if err := r.usable(ctx, op); err != nil {
		return nil, err
	}
	res, err := script.Run(ctx, r.client, []string{r.presenceKey(group), r.expiryKey(group)},
		time.Now().UnixMilli()).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, r.fail(ctx, op, err)
	}
	return parseMembers(res), nil
}

// parseMembers reads what the presence scripts return (key, info, key,
// info, ...) as entries sorted by key: nil if there are none. An empty info
// is a nil Info.
func parseMembers(res []string) []Member {
	var out []Member
	for i := 0; i+1 < len(res); i += 2 {
		m := Member{Key: res[i]}
		if res[i+1] != "" {
			m.Info = []byte(res[i+1])
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
