//go:build soak

package main_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSoak runs 3 nodes behind nginx with 1000 clients in 20 rooms for 5
// minutes (CHATTERPRO_SOAK_DURATION), restarting one node every minute
// (alternately SIGTERM, a drain, and SIGKILL, a crash), and prints how many
// messages were delivered, lost and duplicated, and their latency.
//
//	go test -tags soak -run TestSoak -timeout 20m -v ./cmd/chatterpro
func TestSoak(t *testing.T) {
	duration := 5 * time.Minute
	if v := os.Getenv("CHATTERPRO_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHATTERPRO_SOAK_DURATION=%q: %v", v, err)
		}
		duration = d
	}
	const (
		clients   = 1000
		rooms     = 20
		sendEvery = 10 * time.Second // 100 messages a second in all
	)
	cl := startLBCluster(t, 3, "--rate", "0")
	ctx, cancel := context.WithTimeout(context.Background(), duration+5*time.Minute)
	defer cancel()

	start := time.Now()
	counters := make([]*lbCounter, clients)
	for i := range counters {
		counters[i] = newLBCounter(ctx, t, cl.lb.URL(), fmt.Sprintf("s%d", i), fmt.Sprintf("Soak %d", i%rooms))
		counters[i].stamp = true
	}
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for _, k := range counters {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			k.dial(ctx, t)
		}()
	}
	wg.Wait()
	t.Logf("%d clients connected through nginx in %v", clients, time.Since(start))

	stop := lbRun(counters, sendEvery)
	defer stop()
	lbSetSending(counters, true)
	begin := time.Now()
	for round := 1; time.Since(begin) < duration; round++ {
		wait := time.Until(begin.Add(time.Duration(round) * time.Minute))
		if rest := time.Until(begin.Add(duration)); rest < wait {
			time.Sleep(rest) // the soak's duration is real time under load
			break
		}
		time.Sleep(wait) // one node restart a minute, under load
		n := cl.nodes[round%len(cl.nodes)]
		if round%2 == 1 {
			n.Term()
			if _, took, err := n.Wait(15 * time.Second); err != nil {
				t.Errorf("round %d: node %s did not drain within 15 s", round, n.Addr())
			} else {
				t.Logf("round %d: node %s drained (SIGTERM) in %v", round, n.Addr(), took)
			}
		} else {
			n.Kill()
			t.Logf("round %d: node %s killed (SIGKILL)", round, n.Addr())
		}
		n.Restart(t)
	}
	lbSetSending(counters, false)
	if err := lbDrain(ctx, counters, 30*time.Second); err != nil {
		t.Error(err)
	}
	// Per room: every acknowledged message must reach every member once.
	byRoom := make(map[string][]*lbCounter)
	for _, k := range counters {
		byRoom[k.room] = append(byRoom[k.room], k)
	}
	settle := time.Now().Add(60 * time.Second)
	for room, members := range byRoom {
		if err := lbSettle(members, time.Until(settle), func() []string { return cl.history(t, room) }); err != nil {
			t.Errorf("%s: %v", room, err)
		}
	}
	stop()

	var delivered, lost, duplicated, sent, acked, unavailable, reconnects, resets int
	var latency []time.Duration
	closeCodes := make(map[string]int)
	for _, members := range byRoom {
		want := lbAllAcked(members)
		acked += len(want)
		for _, k := range members {
			lost += k.missing(want)
			k.mu.Lock()
			for _, n := range k.got {
				delivered++
				duplicated += n - 1
			}
			sent += k.sent
			unavailable += k.unavailable
			reconnects += len(k.outages)
			resets += k.resets
			for _, c := range k.closes {
				closeCodes[c.String()]++
			}
			latency = append(latency, k.latency...)
			k.mu.Unlock()
		}
	}
	slices.Sort(latency)
	report := fmt.Sprintf("soak: %v, %d clients, %d rooms, 3 nodes behind nginx, a node restarted every minute\n"+
		"  sent %d, acknowledged %d, refused (unavailable) %d, reconnects %d, resets %d\n"+
		"  delivered %d, lost %d, duplicated %d\n"+
		"  latency p50 %v, p90 %v, p99 %v, p99.9 %v, max %v\n",
		duration, clients, rooms, sent, acked, unavailable, reconnects, resets,
		delivered, lost, duplicated,
		lbPercentile(latency, .5), lbPercentile(latency, .9), lbPercentile(latency, .99), lbPercentile(latency, .999), lbPercentile(latency, 1))
	report += fmt.Sprintf("  connections lost, by close code: %v\n", closeCodes)
	fmt.Print(report)
	t.Log(report)
	if lost > 0 || duplicated > 0 {
		t.Errorf("lost %d and duplicated %d acknowledged messages", lost, duplicated)
	}
	if t.Failed() {
		for _, n := range cl.nodes {
			t.Logf("--- node %s, end of its log ---\n%s", n.Addr(), soakTail(n.Log(), 40))
		}
		kinds := make(map[string]int)
		var first []string
		for _, line := range strings.Split(cl.lb.ErrorLog(), "\n") {
			if !strings.Contains(line, "[error]") && !strings.Contains(line, "[warn]") {
				continue
			}
			kind := line
			if i := strings.Index(line, "*"); i >= 0 {
				if j := strings.Index(line[i:], " "); j >= 0 {
					kind = line[i+j+1:]
				}
			}
			if i := strings.Index(kind, ", client:"); i >= 0 {
				kind = kind[:i]
			}
			if kinds[kind] == 0 && len(first) < 10 {
				first = append(first, line)
			}
			kinds[kind]++
		}
		t.Logf("--- nginx errors by kind: %v\nfirst of each:\n%s", kinds, strings.Join(first, "\n"))
	}
}

// soakTail returns the last n lines of a log.
func soakTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
