package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSmokeSocketIO installs and starts the Socket.IO anchor the way
// chatbench does (its modules from the cache, npm ci the first time, on a
// redis-server of its own) and runs the fan-out scenario at a tiny size:
// every message reaches every member of the room, the sender too, once,
// with no error packet.
func TestSmokeSocketIO(t *testing.T) {
	const members = 5
	dir := t.TempDir()
	cfg, _, _, err := parseFlags([]string{"-scenario", "fanout", "-target", "socketio",
		"-members", "5", "-senders", "2", "-rate-start", "20", "-steps", "2", "-step", "1s", "-warmup", "0s",
		"-p99-limit", "10s", "-settle", "200ms", "-drain", "3s", "-timeout", "3m", "-md", filepath.Join(dir, "out.md")})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	results, err := run(context.Background(), cfg, []string{"-target", "socketio"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("installed (or found) and ran the anchor in %s", time.Since(begin).Round(time.Millisecond))
	if len(results) != 1 || results[0].Target != targetSocketIO || results[0].Scenario != "fanout" {
		t.Fatalf("results %+v, want one fanout run of %s", results, targetSocketIO)
	}
	r := results[0]
	if r.Error != "" {
		t.Fatal(r.Error)
	}
	if r.Params["nodes"] != 1 || r.Params["layer"] != "redis" {
		t.Errorf("%v nodes on %v, want 1 on redis", r.Params["nodes"], r.Params["layer"])
	}
	if len(r.Steps) != 2 {
		t.Fatalf("%d steps, want 2", len(r.Steps))
	}
	for i, st := range r.Steps {
		if !st.Pass || st.Sent == 0 || st.Deliveries != st.Sent*members || st.Lost != 0 || st.Dups != 0 || st.Errors != 0 || st.Closed != 0 || st.P50ms <= 0 {
			t.Errorf("step %d: %+v, want every message delivered to all %d members once", i+1, st, members)
		}
	}
}

// fakeSocketIO is an httptest server speaking Engine.IO 4 over websocket:
// it checks the handshake, then sends script's packets and passes every
// packet it receives afterwards to got.
func fakeSocketIO(t *testing.T, script []string, got chan<- string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/socket.io/" || r.URL.Query().Get("EIO") != "4" || r.URL.Query().Get("room") != "r 1" {
			t.Errorf("dialled %s, want /socket.io/?EIO=4&transport=websocket&room=r+1", r.URL)
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		_ = ws.Write(ctx, websocket.MessageText, []byte(`0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`))
		if _, f, err := ws.Read(ctx); err != nil || string(f) != "40" {
			t.Errorf("connect packet %q (%v), want 40", f, err)
			return
		}
		_ = ws.Write(ctx, websocket.MessageText, []byte(`40{"sid":"n"}`))
		for _, p := range script {
			_ = ws.Write(ctx, websocket.MessageText, []byte(p))
		}
		for {
			_, f, err := ws.Read(ctx)
			if err != nil {
				return
			}
			got <- string(f)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The client side of the Socket.IO anchor: the handshake, events "m"
// measured like ChatterPro's messages (duplicates found), the server's
// ping answered, disconnect and connect-error packets counted as errors,
// other packets ignored; and a message goes out as an event "m" whose
// text every target shares.
func TestHandleSocketIO(t *testing.T) {
	sched := time.Now().Add(-2 * time.Millisecond)
	ns := sched.UnixNano()
	msg := func(seq string) string {
		return `42["m",{"text":"cb 3 ` + seq + ` ` + strconv.FormatInt(ns, 10) + `"}]`
	}
	got := make(chan string, 4)
	srv := fakeSocketIO(t, []string{msg("0"), "2", msg("1"), msg("1"), `42["other",1]`, "41", `44{"message":"no"}`}, got)
	nc := newNetClient(1)
	defer nc.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "ws" + strings.TrimPrefix(srv.URL, "http") + socketioPath
	c, err := nc.join(ctx, base, 3, "r 1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if !c.socketio || c.centrifuge {
		t.Fatalf("client speaks socketio %v, centrifuge %v; want Socket.IO only", c.socketio, c.centrifuge)
	}
	select {
	case p := <-got:
		if p != "3" {
			t.Fatalf("answer to the ping %q, want 3", p)
		}
	case <-ctx.Done():
		t.Fatal("the ping was not answered")
	}
	frame := c.frame(nil, 3, 2, sched)
	if want := `42["m",{"text":"cb 3 2 ` + strconv.FormatInt(ns, 10) + `"}]`; string(frame) != want {
		t.Fatalf("message %s, want %s", frame, want)
	}
	if err := c.write(ctx, frame); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != string(frame) {
		t.Fatalf("server got %q, want %s", p, frame)
	}
	// Every scripted packet was read before the one the server got after.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		errs := c.errors
		c.mu.Unlock()
		if errs == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr, h, errs, first := c.take()
	if tr.recv != 3 || tr.dups != 1 || tr.unique(map[uint32]uint32{3: 2}) != 2 || h.n != 2 || errs != 2 {
		t.Errorf("recv %d dups %d unique %d latencies %d errors %d, want 3 1 2 2 2", tr.recv, tr.dups, tr.unique(map[uint32]uint32{3: 2}), h.n, errs)
	}
	if first != "41" {
		t.Errorf("first error %q, want the disconnect packet 41", first)
	}
}

// A namespace that refuses the connect fails the join.
func TestJoinSocketIORefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		_ = ws.Write(r.Context(), websocket.MessageText, []byte(`0{"sid":"s"}`))
		_, _, _ = ws.Read(r.Context())
		_ = ws.Write(r.Context(), websocket.MessageText, []byte(`44{"message":"Invalid namespace"}`))
		_, _, _ = ws.Read(r.Context())
	}))
	defer srv.Close()
	nc := newNetClient(1)
	defer nc.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nc.join(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+socketioPath, 1, "r")
	if err == nil || !strings.Contains(err.Error(), "Invalid namespace") {
		t.Fatalf("join error %v, want the refusal", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("join waited for its deadline")
	}
}

// The report sets Socket.IO's ladder beside the others when it ran: a
// column of the fan-out table, p50 and p99 columns in the latency view,
// and the stretch target's row, decided run by run at the highest step of
// at most 210 msgs/s both ChatterPro and Socket.IO passed. Without
// Socket.IO results the report is as before.
func TestSocketIOReport(t *testing.T) {
	// ladder climbs the default ladder (10, 14, ... 207, 289) with p50s
	// p50 at every step; steps from fail on fail.
	ladder := func(target string, run int, p50 float64, fail int) *result {
		r := &result{Scenario: "fanout", Target: target, Run: run}
		rate := 10.0
		for i := range 11 {
			pass := fail == 0 || i+1 < fail
			r.Steps = append(r.Steps, step{MsgsPerSec: rate, P50ms: p50, P99ms: 3 * p50, Pass: pass, CPUusPerDel: 1, LoadgenCores: 0.1, DeliveriesPerS: rate * 500, Cores: 0.5})
			if !pass {
				break
			}
			rate *= 1.4
		}
		r.Metrics = fanoutMetrics(r.Steps)
		return r
	}
	base := []*result{
		ladder(targetOurs, 1, 1, 0), ladder(targetBare, 1, 1, 0), ladder(targetCentrifuge, 1, 1.5, 0),
		ladder(targetOurs, 2, 1.6, 0), ladder(targetBare, 2, 1, 0), ladder(targetCentrifuge, 2, 1.5, 0),
	}
	const row = "stretch: fan-out 1 room, p50 at ~200 msgs/s below Socket.IO's (chatterpro vs socketio on its Redis adapter)"
	plain := newReport("test", 2, base).markdown("")
	if strings.Contains(plain, "socketio") || strings.Contains(plain, "stretch") {
		t.Errorf("without Socket.IO results the report mentions it:\n%s", plain)
	}
	if want := "| msgs/s | chatterpro p50 | chatterpro p99 | centrifuge p50 | centrifuge p99 | p50 ratio | p99 ratio | bare p50 | bare p99 | chatbench cores (chatterpro / centrifuge / bare) |"; !strings.Contains(plain, want) {
		t.Errorf("without Socket.IO results the latency view lacks %q:\n%s", want, plain)
	}

	// Run 1: Socket.IO passes the whole ladder at 2 ms; run 2: it fails
	// the 207 step, so the stretch is judged at 148 msgs/s.
	withSIO := append(slices.Clone(base), ladder(targetSocketIO, 1, 2, 0), ladder(targetSocketIO, 2, 2, 10))
	rep := newReport("test", 2, withSIO)
	var v *verdict
	for i := range rep.Verdicts {
		if rep.Verdicts[i].Target == row {
			v = &rep.Verdicts[i]
		}
	}
	if v == nil {
		t.Fatalf("no stretch row in %+v", rep.Verdicts)
	}
	wantDetail := "median p50 1.30 vs 2.00 ms at the highest step <= 210 msgs/s both passed (207, 148 msgs/s); runs: 1.00 vs 2.00, 1.60 vs 2.00 ms; median ratio 0.65 (runs: 0.50, 0.80); 2 of 2 run(s) with such a step; socketio failed the 207 msgs/s step in 1 of 2 run(s)"
	if !v.Met || v.Detail != wantDetail {
		t.Errorf("stretch row met %v, %q; want met, %q", v.Met, v.Detail, wantDetail)
	}
	md := rep.markdown("")
	mdContains(t, md,
		"| "+row+" | yes | "+wantDetail+" |",
		"| metric | chatterpro | bare | chatterpro / bare | centrifuge | socketio | chatterpro / centrifuge | all runs |",
		"| msgs/s | chatterpro p50 | chatterpro p99 | centrifuge p50 | centrifuge p99 | p50 ratio | p99 ratio | bare p50 | bare p99 | socketio p50 | socketio p99 | chatbench cores (chatterpro / centrifuge / bare / socketio) |",
		"| 207 | 1.30 | 3.90 | 1.50 | 4.50 | 0.87 | 0.87 | 1.00 | 3.00 | 2.00 | 6.00 | 0.10 / 0.10 / 0.10 / 0.10 |",
		"Ladder of socketio, run 1")

	// ChatterPro much slower in one run of two: the median ratio is above 1;
	// a run without a step both passed leaves it unmet too.
	for name, rs := range map[string][]*result{
		"slower":         append(slices.Clone(base), ladder(targetSocketIO, 1, 2, 0), ladder(targetSocketIO, 2, 1, 0)),
		"no common step": append(slices.Clone(base), ladder(targetSocketIO, 1, 0.5, 0), ladder(targetSocketIO, 2, 2, 1)),
	} {
		for _, v := range newReport("test", 2, rs).Verdicts {
			if v.Target == row && v.Met {
				t.Errorf("%s: stretch met: %s", name, v.Detail)
			}
		}
	}
}
