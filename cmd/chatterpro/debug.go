package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// mutexSampling is the share of lock contention events the mutex profile
// records (1 in mutexSampling) while the profiler is on: enough to see
// which lock holders keep others waiting (/debug/pprof/mutex), for next to
// nothing.
const mutexSampling = 100

// serveDebug serves Go's profiler (net/http/pprof) on addr, apart from the
// chat's own listener so that it is never reachable through the
// balancer, and turns the mutex profile on. It returns the listener;
// closing it stops the server.
func serveDebug(addr string, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr %s: %w (pick a free port, or leave it empty to turn the profiler off)", addr, err)
	}
	runtime.SetMutexProfileFraction(mutexSampling)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace streams for as long as asked.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() { _ = hs.Serve(ln) }()
	log.Info("profiler listening", "addr", ln.Addr().String())
	return ln, nil
}
