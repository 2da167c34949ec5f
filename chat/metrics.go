package chat

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatterpro/chatterpro/consumer"
)

// metrics are the chat's Prometheus metrics.
type metrics struct {
	conns  prometheus.Gauge
	in     prometheus.Counter
	out    *frameCounter // chatterpro_frames_out_total
	errors *prometheus.CounterVec
	closes *prometheus.CounterVec
	layer  *prometheus.HistogramVec
	// unhandledEvents counts layer events that reached a socket with no
	// handler for their type (a bug or a newer node's event).
	unhandledEvents *prometheus.CounterVec
	// busy counts connections refused because too many were starting at
	// once (consumer.Options.MaxConnecting): a reconnect storm.
	busy prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	out := new(frameCounter)
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatterpro_connections", Help: "Open chat websocket connections on this node.",
		}),
		in: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatterpro_frames_in_total", Help: "Frames received from clients.",
		}),
		out: out,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatterpro_error_frames_total", Help: "Error frames sent to clients, by code.",
		}, []string{"code"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatterpro_closes_total", Help: "Websocket connections closed, by close code (1013: slow consumer).",
		}, []string{"code"}),
		layer: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "chatterpro_layer_seconds",
			Help:    "Latency of channel layer calls, by operation and outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op", "outcome"}),
		unhandledEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatterpro_unhandled_events_total", Help: "Layer events dropped because their type had no handler, by type.",
		}, []string{"type"}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatterpro_connections_busy_total", Help: "Connections refused with 503 because too many were starting at once; they retry.",
		}),
	}
	outFunc := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatterpro_frames_out_total", Help: "Frames queued to clients.",
	}, out.total)
	for _, c := range []prometheus.Collector{m.conns, m.in, outFunc, m.errors, m.closes, m.layer, m.unhandledEvents, m.busy} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	for _, code := range []string{codeBadJSON, codeUnknownType, codeBadText, codeBadID, codeRateLimited, codeUnavailable} {
		m.errors.WithLabelValues(code)
	}
	return m, nil
}

// frameCounter counts the frames queued to clients on counters of their
// own cache line, one per group of connections: the dispatchers of a busy
// room, on every core, each add to the counter of their connection, and
// not all to one whose line the cores pass back and forth with every
// frame (one shared counter took 3 % of a node's CPU at 778 000 frames a
// second).
type frameCounter struct {
	shards [frameShards]struct {
		n atomic.Uint64
		_ [56]byte // the rest of a 64-byte cache line
	}
	next atomic.Uint32 // hands out shards, one connection after the other
}

const frameShards = 16

// shard returns the counter of a new connection.
func (f *frameCounter) shard() uint8 { return uint8(f.next.Add(1) % frameShards) }

// add counts n frames on shard.
func (f *frameCounter) add(shard uint8, n int) { f.shards[shard%frameShards].n.Add(uint64(n)) }

// total is the count of every shard.
func (f *frameCounter) total() float64 {
	var sum uint64
	for i := range f.shards {
		sum += f.shards[i].n.Load()
	}
	return float64(sum)
}

func (m *metrics) closed(code consumer.StatusCode) {
	m.closes.WithLabelValues(strconv.Itoa(int(code))).Inc()
}

func (m *metrics) unhandled(typ string) {
	if len(typ) > 64 {
		typ = typ[:64] // a label stays small whatever a peer sends
	}
	m.unhandledEvents.WithLabelValues(typ).Inc()
}

func (m *metrics) observe(op string, start time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.layer.WithLabelValues(op, outcome).Observe(time.Since(start).Seconds())
}
