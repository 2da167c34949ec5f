package chat

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The frames counter's shards add up to every frame counted, whichever
// connections counted them, at once.
func TestFrameCounterSumsShards(t *testing.T) {
	var f frameCounter
	var wg sync.WaitGroup
	for range 2 * frameShards {
		shard := f.shard()
		wg.Go(func() {
			for range 1000 {
				f.add(shard, 1)
			}
			f.add(shard, 5)
		})
	}
	wg.Wait()
	if got, want := f.total(), float64(2*frameShards*1005); got != want {
		t.Fatalf("total %v; want %v", got, want)
	}
}

// chatterpro_frames_out_total counts the frames the node queued: a chat
// message to a room of two is two more.
func TestFramesOutMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := newNode(t, nil, func(c *Config) { c.Registry = reg })
	ann := n.join(t, "ann", "s-ann", "Chat Room", "")
	ann.joinFrames("ann")
	bob := n.join(t, "Bob", "s-bob", "Chat Room", "")
	bob.joinFrames("ann", "Bob")
	ann.awaitNoticeAndUsers("Bob has joined the chat", "ann", "Bob")

	before := framesOut(t, reg)
	if before < 4 { // each socket's join frames at least, and ann's notice
		t.Fatalf("frames out before the message: %v; want at least 4", before)
	}
	bob.say("counted")
	ann.await("message", "counted")
	bob.await("message", "counted")
	if after := framesOut(t, reg); after < before+2 {
		t.Fatalf("frames out %v after a message to two sockets, %v before; want at least 2 more", after, before)
	}
}

func framesOut(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "chatterpro_frames_out_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no chatterpro_frames_out_total")
	return 0
}
