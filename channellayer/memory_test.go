package channellayer_test

import (
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/channellayer/layertest"
)

func TestMemory(t *testing.T) {
	layertest.Run(t, func(t *testing.T) layertest.Setup {
		opts := channellayer.MemoryOptions{Capacity: 16, Expiry: 400 * time.Millisecond, HistorySize: 16}
		m, err := channellayer.NewMemory(opts)
		if err != nil {
			t.Fatalf("NewMemory: %v", err)
		}
		return layertest.Setup{
			Layer:       m,
			Capacity:    opts.Capacity,
			Expiry:      opts.Expiry,
			HistorySize: opts.HistorySize,
		}
	})
}

func TestNewMemoryOptions(t *testing.T) {
	tests := []struct {
		name string
		opts channellayer.MemoryOptions
		ok   bool
	}{
		{"zero value", channellayer.MemoryOptions{}, true},
		{"small", channellayer.MemoryOptions{Capacity: 1, Expiry: time.Millisecond, HistorySize: 1}, true},
		{"negative capacity", channellayer.MemoryOptions{Capacity: -1}, false},
		{"negative expiry", channellayer.MemoryOptions{Expiry: -time.Second}, false},
		{"negative history", channellayer.MemoryOptions{HistorySize: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := channellayer.NewMemory(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("NewMemory(%+v) error = %v, want ok = %v", tt.opts, err, tt.ok)
			}
			if m != nil {
				_ = m.Close(t.Context())
			}
		})
	}
}
