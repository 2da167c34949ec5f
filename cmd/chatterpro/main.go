// Command chatterpro serves the ChatterPro chat.
//
//	go run ./cmd/chatterpro [flags]
//
// Every flag can also be set with an environment variable CHATTERPRO_<NAME>
// (e.g. CHATTERPRO_LAYER=redis://127.0.0.1:6379/0); a flag on the command
// line wins. With no flags it serves on http://localhost:3000 with the
// in-memory layer: one process, nothing else to run.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chatterpro/chatterpro/chat"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/routing"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &logLevel}))
	setGCPolicy()
	if err := run(context.Background(), os.Args[1:], log); err != nil {
		log.Error("chatterpro stopped", "err", err)
		os.Exit(1)
	}
}

// logLevel is the level of the process's logger, set by --log-level.
var logLevel slog.LevelVar

type options struct {
	logLevel       slog.Level
	addr           string
	layer          string
	secret         string
	allowedOrigins string
	rooms          string
	presenceTTL    time.Duration
	maxConnecting  int
	grace          time.Duration
	rate           float64
	// Abuse caps (0: off) and the proxies whose X-Forwarded-For is read.
	maxSessionConns int
	maxAddrConns    int
	joinRate        int
	trustedProxies  string
	redisReplicas   int
	roomTTL         time.Duration
	history         int
	apiToken        string
	debugAddr       string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("chatterpro", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", "localhost:3000", "listen address")
	fs.StringVar(&o.layer, "layer", "memory://", "channel layer: memory://, redis://host:port/db, redis-sentinel://[user:password@]host:port[,host:port...]/master-name[/db][?sentinel_password=...] or redis-cluster://host:port[,host:port...]")
	fs.StringVar(&o.secret, "secret", "", "session signing key shared by every node behind one balancer (at least 16 bytes; default: random per process)")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", "extra origins (scheme://host[:port], comma-separated) allowed for websocket and POST")
	fs.StringVar(&o.rooms, "rooms", strings.Join(chat.DefaultRooms(), ","), "rooms offered on the join page, comma-separated")
	fs.DurationVar(&o.presenceTTL, "presence-ttl", 30*time.Second, "how long a dead node's presence entries outlive it")
	fs.IntVar(&o.maxConnecting, "max-connecting", consumer.DefaultMaxConnecting, "how many sockets may run their join at once; the rest wait up to 6 s, then get 503 (-1: no limit)")
	fs.DurationVar(&o.grace, "grace", 10*time.Second, "how long a lost connection may take to come back before its departure is announced")
	fs.Float64Var(&o.rate, "rate", 10, "chat messages per second per connection (burst twice that); 0 turns the limit off")
	fs.IntVar(&o.maxSessionConns, "max-session-conns", 10, "sockets one session may hold on this node; more are refused with 429; 0 turns the cap off")
	fs.IntVar(&o.maxAddrConns, "max-addr-conns", 0, "sockets from one client address on this node; more are refused with 429; 0 (the default) turns the cap off")
	fs.IntVar(&o.joinRate, "join-rate", 0, "POST /join per minute per client address (burst half that); over it 429 with Retry-After; 0 (the default) turns the limit off")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "CIDRs (comma-separated) of proxies whose X-Forwarded-For names the client address; default none")
	fs.IntVar(&o.redisReplicas, "redis-replicas", 0, "acknowledge a chat message only once this many Redis replicas have it (survives a failover); 0: once the primary has it")
	fs.DurationVar(&o.roomTTL, "room-ttl", 168*time.Hour, "a room's stored history and presence expire after this long without a message")
	fs.IntVar(&o.history, "history", 1000, "messages each room keeps for resume and for paging back")
	fs.StringVar(&o.apiToken, "api-token", "", "bearer token of the server-side publish API (POST /api/rooms/{room}/messages); empty turns the API off")
	fs.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this address, like 127.0.0.1:6060; keep it off public networks; empty (the default): off")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "least important log level written: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (flags only; see -h)", fs.Args())
	}
	// A flag not given on the command line takes its environment variable,
	// unless that is unset or empty.
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fromEnv := func(flagName string) bool { return !given[flagName] && os.Getenv(envName(flagName)) != "" }
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if envErr != nil || !fromEnv(f.Name) {
			return
		}
		name := envName(f.Name)
		v := os.Getenv(name)
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %v (it sets --%s; see -h)", name, v, err, f.Name)
		}
	})
	if envErr != nil {
		return o, envErr
	}
	// source names where a flag's value came from, for the errors below.
	source := func(flagName string) string {
		if fromEnv(flagName) {
			return envName(flagName)
		}
		return "--" + flagName
	}
	if o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0) {
		return o, fmt.Errorf("%s must be 0 (off) or a positive number of messages per second, not %v", source("rate"), o.rate)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"max-session-conns", o.maxSessionConns}, {"max-addr-conns", o.maxAddrConns}, {"join-rate", o.joinRate}} {
		if c.v < 0 {
			return o, fmt.Errorf("%s must be 0 (off) or a positive number, not %d", source(c.name), c.v)
		}
	}
	if _, err := routing.NewTrustedProxies(splitList(o.trustedProxies)); err != nil {
		return o, fmt.Errorf("%s: %v", source("trusted-proxies"), err)
	}
	if o.history <= 0 {
		return o, fmt.Errorf("%s must be a positive number of messages, like 1000", source("history"))
	}
	if o.presenceTTL <= 0 {
		return o, fmt.Errorf("%s must be positive, like 30s", source("presence-ttl"))
	}
	if o.grace <= 0 {
		return o, fmt.Errorf("%s must be positive, like 10s", source("grace"))
	}
	if o.maxConnecting == 0 || o.maxConnecting < -1 {
		return o, fmt.Errorf("%s must be a positive number of sockets, like 256, or -1 for no limit", source("max-connecting"))
	}
	if o.redisReplicas < 0 {
		return o, fmt.Errorf("%s must be 0 or a positive number of replicas", source("redis-replicas"))
	}
	if o.roomTTL <= 0 {
		return o, fmt.Errorf("%s must be positive, like 168h", source("room-ttl"))
	}
	return o, nil
}

// envName is the environment variable of a flag: CHATTERPRO_PRESENCE_TTL
// for --presence-ttl.
func envName(flagName string) string {
	return "CHATTERPRO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	o, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logLevel.Set(o.logLevel)
	secret := []byte(o.secret)
	if o.secret == "" {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
		log.Warn("no --secret given: using a random one, so sessions end when this process does and other nodes cannot read them; set --secret (or CHATTERPRO_SECRET) on every node")
	}

	layer, err := openLayer(ctx, o.layer, layerSettings{replicas: o.redisReplicas, roomTTL: o.roomTTL, history: o.history, connecting: o.maxConnecting}, log)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = layer.Close(cctx)
	}()

	app, err := chat.New(chat.Config{
		Layer:          layer,
		Secret:         secret,
		AllowedOrigins: splitList(o.allowedOrigins),
		Rooms:          splitList(o.rooms),
		PresenceTTL:    o.presenceTTL,
		MaxConnecting:  o.maxConnecting,
		Grace:          o.grace,
		Rate:           o.rate,
		APIToken:       o.apiToken,
		Logger:         log,
		// Abuse caps.
		MaxSessionConns: o.maxSessionConns,
		MaxAddrConns:    o.maxAddrConns,
		JoinRate:        o.joinRate,
		TrustedProxies:  splitList(o.trustedProxies),
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		_ = app.Shutdown(context.Background())
		return fmt.Errorf("listening on %s: %w (is another server running? pick one with --addr)", o.addr, err)
	}
	if o.debugAddr != "" {
		dln, err := serveDebug(o.debugAddr, log)
		if err != nil {
			_ = ln.Close()
			_ = app.Shutdown(context.Background())
			return err
		}
		defer dln.Close()
	}
	hs := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	log.Info("ChatterPro is running: open http://"+displayAddr(ln.Addr().String()), "addr", ln.Addr().String(), "layer", redactURL(o.layer))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case err := <-served:
		_ = app.Shutdown(context.Background())
		return err
	case s := <-sig:
		log.Info("shutting down: closing sockets with 1012 so clients move to another node", "signal", s.String())
	}
	sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	// Stop accepting first, then close the sockets (http.Server.Shutdown
	// does not close hijacked websockets; the app does).
	_ = ln.Close()
	appErr := app.Shutdown(sctx)
	httpErr := hs.Shutdown(sctx)
	if appErr != nil || (httpErr != nil && !errors.Is(httpErr, http.ErrServerClosed)) {
		log.Warn("shutdown was not clean", "app", appErr, "http", httpErr)
	}
	log.Info("stopped")
	return nil
}

// redactURL returns raw, a --layer URL, for logs and errors: as given if
// it has no user info, else with everything before its last "@" after the
// scheme shown as "xxxxx"; a query's values (the Sentinel password) are
// hidden too. It works on the text, not on a parse, because a password
// with an unescaped "/", "?" or "#" would parse as a host or path.
func redactURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return hideQuery(raw)
	}
	scheme := strings.Index(raw, "://")
	if scheme < 0 || scheme > at {
		return "(not shown: it may hold a password)"
	}
	return raw[:scheme] + "://xxxxx@" + hideQuery(raw[at+1:])
}

func displayAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if host == "127.0.0.1" || host == "::1" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
