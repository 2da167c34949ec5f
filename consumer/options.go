package consumer

import (
	"errors"
	"log/slog"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/presence"
)

// DefaultMaxConnecting is Options.MaxConnecting's default. A join
// mostly waits (on the layer's round trips, and for the CPU while a
// storm saturates it), so the joins a node runs at once, not its CPU,
// bound how fast a storm is served: when one of 8 nodes with 12 500
// people each died on a 2-core machine, its people were all back on the
// others in 24 to 60 s with 256 (five runs), in 101 s with 64 (two);
// with 512 and 1 024 clients gave up on joins still under way
// (BENCHMARKS.md, cluster, runs 86 to 95).
const DefaultMaxConnecting = 256

// Options configures a Server. Only Layer is required.
type Options struct {
	// Layer carries events between consumers. Required.
	Layer channellayer.Layer
	// ReadLimit is the largest frame a client may send; a bigger one
	// closes the connection with 1009. Defaults to 32 KiB.
	ReadLimit int64
	// QueueBytes caps a connection's outgoing queue; a client that falls
	// this far behind is closed with 1013. Defaults to 1 MiB.
	QueueBytes int
	// PingInterval is how often an idle peer is pinged. Defaults to 25 s;
	// negative disables pings.
	PingInterval time.Duration
	// PingTimeout is how long a pong may take before the peer is
	// considered dead. Defaults to 15 s.
	PingTimeout time.Duration
	// WriteTimeout bounds one write to the network (a batch of frames):
	// a peer that takes nothing for that long is dropped. Defaults to 10 s.
	WriteTimeout time.Duration
	// Coalesce paces the layer events of a connection that come fast.
	// While they come more than 2.5 to a Coalesce on average (a moving
	// average; more than 625 a second at the default), each batch waits
	// until Coalesce after the one before, and its events are handled and
	// written together, in one write (32 waiting events start the batch at
	// once). Slower events are handled as they come: a window that would
	// gather fewer costs their latency and saves next to no writes. Over
	// 3.5 to a Coalesce (875 a second at the default) they are paced two
	// and a half Coalesce apart, and a flood, more than 5 (1 250 a second),
	// five apart: fewer writes, where the CPU they cost is what holds the
	// latency.
	// Defaults to 4 ms, which measured lower median latency than 10 ms and
	// lower CPU per delivery than no pacing in a busy room (BENCHMARKS.md);
	// negative disables it: events are then handled as they come, and the
	// frames that queue while a write is under way go in the next write.
	Coalesce time.Duration
	// DisconnectTimeout bounds the consumer's Disconnect and the cleanup
	// after it. Defaults to 5 s.
	DisconnectTimeout time.Duration
	// OnClosing, if set, is called once per connection as it starts
	// closing, with its close code (for metrics). It must not block.
	OnClosing func(code StatusCode)
	// MaxConnecting is how many connections may be in Connect at once. A
	// connection over it waits up to 6 s for its turn, then is
	// refused with ErrBusy (a websocket or event stream request gets 503
	// and Retry-After: 1). When a node dies and its clients all come to
	// the others at once, the storm then waits at the clients, with their
	// backoff, and not in the node's run queue or the layer's round
	// trips, where it would hold up everyone else. Defaults to
	// DefaultMaxConnecting; negative: no limit.
	MaxConnecting int
	// OnBusy, if set, is called for every connection refused with
	// ErrBusy (for a metric). It must not block.
	OnBusy func()
	// OnUnhandled, if set, is called for every layer event that reached a
	// connection with no handler for its type (see Conn.On), for a
	// metric. It must not block. Such events are also logged at warn
	// level, once per type.
	OnUnhandled func(typ string)
	// Presence configures the presence of connections (Conn.Track): its
	// TTL (how long a dead node's entries outlive it; defaults to 30 s)
	// and Interval (least time between two diffs of a group on this node;
	// defaults to 1 s).
	Presence presence.Options
	// PresenceGrace is how long the presence entries of a connection lost
	// without a normal close stay listed, so that a quick reconnect is not
	// a leave. Defaults to 0: removed at once.
	PresenceGrace time.Duration
	// Logger receives the server's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults checks o and fills in the defaults its fields document.
func (o Options) withDefaults() (Options, error) {
	if o.Layer == nil {
		return o, errors.New("consumer: Options.Layer is required (use channellayer.NewMemory for one process)")
	}
	if o.ReadLimit < 0 || o.QueueBytes < 0 || o.PingTimeout < 0 || o.WriteTimeout < 0 || o.DisconnectTimeout < 0 {
		return o, errors.New("consumer: limits and timeouts in Options must not be negative")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.ReadLimit == 0 {
		o.ReadLimit = 32 << 10
	}
	if o.MaxConnecting == 0 {
		o.MaxConnecting = DefaultMaxConnecting
	}
	if o.QueueBytes == 0 {
		o.QueueBytes = 1 << 20
	}
	def(&o.PingInterval, 25*time.Second)
	def(&o.PingTimeout, 15*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.DisconnectTimeout, 5*time.Second)
	def(&o.Coalesce, 4*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
