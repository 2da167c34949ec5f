package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chatterpro/chatterpro/auth"
	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/clock"
	"github.com/chatterpro/chatterpro/presence"
	"github.com/chatterpro/chatterpro/routing"
)

// Config configures the chat. Layer and Secret are required.
type Config struct {
	// Layer carries the rooms; it must implement channellayer.History,
	// channellayer.Presence, channellayer.IdempotentRecorder and
	// channellayer.Pager and channellayer.Directory (both backends do);
	// its history size is what "older" requests can reach. Required.
	Layer channellayer.Layer
	// Secret signs session cookies; every node behind one balancer needs
	// the same. Required, at least 16 bytes.
	Secret []byte
	// AllowedOrigins are extra origins ("scheme://host[:port]") allowed
	// for websockets and POSTs besides the page's own. Defaults to none.
	AllowedOrigins []string
	// Rooms are offered on the join page. Defaults to "Chat Room",
	// "Business Room", "Gaming Room".
	Rooms []string
	// PresenceTTL is how long a dead node's presence outlives it.
	// Defaults to 30 s.
	PresenceTTL time.Duration
	// Grace is how long a lost connection may take to come back before its
	// departure is announced. Defaults to 10 s.
	Grace time.Duration
	// UsersInterval is the least time between two users frames of one
	// room from this node. Defaults to 1 s.
	UsersInterval time.Duration
	// MaxConnecting is how many sockets may run their join at once on
	// this node (consumer.Options.MaxConnecting). Defaults to the
	// framework's.
	MaxConnecting int
	// Rate is how many chat messages per second one connection may send
	// (burst twice that); "older" requests and forwarded typing signals
	// count too. 0: no limit.
	Rate float64
	// MaxSessionConns caps the sockets one session may hold on this node;
	// more are refused with 429. 0: no cap.
	MaxSessionConns int
	// MaxAddrConns caps the sockets from one client address on this node;
	// more are refused with 429. 0: no cap.
	MaxAddrConns int
	// JoinRate is how many POST /join one client address may make per
	// minute (burst half that); over it: 429 with Retry-After. 0: no limit.
	JoinRate int
	// TrustedProxies are the CIDRs of reverse proxies whose
	// X-Forwarded-For tells the client address the caps count. Defaults to
	// none: the TCP peer is the client.
	TrustedProxies []string
	// TypingInterval is the least time between two typing signals of one
	// connection that are forwarded to the room. Defaults to 2 s.
	TypingInterval time.Duration
	// APIToken is the bearer token of the publish API, POST
	// /api/rooms/{room}/messages (each room takes Rate of its messages per
	// second on each node, burst twice that). Defaults to empty: the API is
	// off and answers 404.
	APIToken string
	// Registry receives the metrics. Defaults to a new registry, served
	// on /metrics.
	Registry *prometheus.Registry
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// DefaultRooms are the rooms offered when Config.Rooms is empty.
func DefaultRooms() []string { return []string{"Chat Room", "Business Room", "Gaming Room"} }

// App is the ChatterPro chat: its pages, its websocket consumer, and the
// node's health and metrics endpoints.
type App struct {
	cfg      Config
	log      *slog.Logger
	layer    channellayer.Layer
	history  channellayer.History
	once     channellayer.IdempotentRecorder
	pager    channellayer.Pager
	sessions *auth.Sessions
	server   *consumer.Server
	hub      *hub
	dir      *directory
	metrics  *metrics
	limits   limits // every transport's sockets count in limits.conns
	handler  http.Handler
	clock    clock.Clock // paces the message rate limit; a test moves it
}

// New builds the chat. Call Shutdown to stop it.
func New(cfg Config) (*App, error) {
	if cfg.Layer == nil {
		return nil, errors.New("chat: Config.Layer is required")
	}
	history, ok := cfg.Layer.(channellayer.History)
	if !ok {
		return nil, fmt.Errorf("chat: the layer %T keeps no history; use the memory or Redis layer", cfg.Layer)
	}
	if _, ok := cfg.Layer.(channellayer.Presence); !ok {
		return nil, fmt.Errorf("chat: the layer %T tracks no presence; use the memory or Redis layer", cfg.Layer)
	}
	once, ok := cfg.Layer.(channellayer.IdempotentRecorder)
	if !ok {
		return nil, fmt.Errorf("chat: the layer %T cannot record a message once per client ID; use the memory or Redis layer", cfg.Layer)
	}
	pager, ok := cfg.Layer.(channellayer.Pager)
	if !ok {
		return nil, fmt.Errorf("chat: the layer %T cannot page through history; use the memory or Redis layer", cfg.Layer)
	}
	dir, ok := cfg.Layer.(channellayer.Directory)
	if !ok {
		return nil, fmt.Errorf("chat: the layer %T keeps no directory; use the memory or Redis layer", cfg.Layer)
	}
	if cfg.Rate < 0 || cfg.PresenceTTL < 0 || cfg.Grace < 0 || cfg.UsersInterval < 0 {
		return nil, errors.New("chat: Rate, PresenceTTL, Grace and UsersInterval must not be negative")
	}
	if cfg.MaxSessionConns < 0 || cfg.MaxAddrConns < 0 || cfg.JoinRate < 0 {
		return nil, errors.New("chat: MaxSessionConns, MaxAddrConns and JoinRate must not be negative (0 is no limit)")
	}
	if len(cfg.Rooms) == 0 {
		cfg.Rooms = DefaultRooms()
	}
	for _, r := range cfg.Rooms {
		if _, err := ValidRoom(r); err != nil {
			return nil, fmt.Errorf("chat: room %q: %w", r, err)
		}
	}
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = 30 * time.Second
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.TypingInterval <= 0 {
		cfg.TypingInterval = 2 * time.Second
	}
	if cfg.UsersInterval == 0 {
		cfg.UsersInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	sessions, err := auth.New(auth.Options{Secret: cfg.Secret})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("chat: registering metrics: %w", err)
	}
	srv, err := consumer.NewServer(consumer.Options{
		Layer: cfg.Layer, ReadLimit: frameReadLimit, OnClosing: m.closed, Logger: cfg.Logger,
		OnUnhandled:   m.unhandled,
		OnBusy:        m.busy.Inc,
		Presence:      presence.Options{TTL: cfg.PresenceTTL, Interval: cfg.UsersInterval, Logger: cfg.Logger},
		PresenceGrace: cfg.Grace,
		MaxConnecting: cfg.MaxConnecting,
	})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	a := &App{
		cfg: cfg, log: cfg.Logger, layer: cfg.Layer, history: history, once: once, pager: pager,
		sessions: sessions, server: srv, metrics: m, clock: clock.Real,
	}
	lim, err := newLimits(cfg)
	if err != nil {
		return nil, err
	}
	a.limits = lim
	router, err := routing.New(routing.Options{
		Server:         srv,
		Conns:          lim.conns,
		Proxies:        lim.proxies,
		AllowedOrigins: cfg.AllowedOrigins,
		Identify:       a.identify,
		Logger:         cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	router.Consumer("/ws/chat/{room}/", a.newConsumer)

	p, err := newPages(pagesConfig{Sessions: sessions, Rooms: cfg.Rooms, AllowedOrigins: cfg.AllowedOrigins, Limits: lim, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	p.register(mux)
	mux.Handle("/ws/", router)
	mux.Handle("POST /api/rooms/{room}/messages", newPublishAPI(a))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", a.ready)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	a.handler = mux
	a.dir = newDirectory(dir, p.rooms, cfg.PresenceTTL, cfg.Logger, m)
	mux.Handle("GET /rooms", a.dir)
	a.hub = newHub(srv, cfg.UsersInterval, cfg.Logger, m, a.dir.update)
	a.dir.start(a.hub.roomNames)
	return a, nil
}

func (a *App) identify(r *http.Request) (*consumer.User, error) {
	s, err := a.sessions.FromRequest(r)
	if err != nil {
		return nil, err
	}
	return &consumer.User{Name: s.Nickname, Session: s.ID}, nil
}

func (a *App) ready(w http.ResponseWriter, r *http.Request) {
	if c, ok := a.layer.(channellayer.Checker); ok {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := c.Check(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// ServeHTTP serves the chat's pages, websocket and probes.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

// Connections returns the number of open chat sockets on this node.
func (a *App) Connections() int { return a.server.Len() }

// Shutdown closes every chat socket with 1012 so clients reconnect to
// another node, hands their presence over (see Config.Grace), and stops the
// node's background work. It does not close the layer.
func (a *App) Shutdown(ctx context.Context) error {
	// The sockets close first, handing their presence over for the grace
	// period (the framework does); then the node's own work stops.
	err := a.server.Shutdown(ctx)
	a.hub.close()
	a.dir.close()
	return err
}
