package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

// The chat's layer channels hold channelCapacity events, not the layers'
// default of 100: a connection whose dispatcher is late is not closed
// while its outgoing queue is far from its byte cap.
func TestLayerChannelCapacity(t *testing.T) {
	rs := redistest.Start(t)
	for _, raw := range []string{"memory://", "redis://" + rs.Addr() + "/0"} {
		kind, _, _ := strings.Cut(raw, ":")
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := openLayer(ctx, raw, layerSettings{history: 1000}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(context.Background())
			ch, err := l.NewChannel(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.GroupAdd(ctx, "room", ch); err != nil {
				t.Fatal(err)
			}
			// A directed Send reports a full channel at once.
			m := channellayer.Message{Type: "chat", Body: []byte(`{"text":"hi"}`)}
			for i := range channelCapacity {
				if err := l.Send(ctx, ch, m); err != nil {
					t.Fatalf("send %d of %d: %v", i+1, channelCapacity, err)
				}
			}
			if err := l.Send(ctx, ch, m); !errors.Is(err, channellayer.ErrChannelFull) {
				t.Fatalf("send %d: %v, want ErrChannelFull", channelCapacity+1, err)
			}
			for i := range channelCapacity {
				if _, err := l.Receive(ctx, ch); err != nil {
					t.Fatalf("receive %d: %v", i+1, err)
				}
			}
		})
	}
}

// A node's Redis pool has a connection for every join that may wait on
// Redis at once (--max-connecting) and room for the background work.
func TestPoolSizeCoversJoins(t *testing.T) {
	for _, tc := range []struct{ connecting, least int }{
		{0, 64 + 16}, {64, 64 + 16}, {8, 8 + 16}, {200, 200 + 16}, {-1, 256},
	} {
		if got := poolSize(tc.connecting); got < tc.least {
			t.Errorf("poolSize(%d) = %d, want at least %d", tc.connecting, got, tc.least)
		}
	}
}
