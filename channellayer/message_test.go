package channellayer_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/chatterpro/chatterpro/channellayer"
)

func TestNewMessageRefusesItsOwnType(t *testing.T) {
	tests := []struct {
		name    string
		v       any
		wantErr bool
	}{
		{"map with type", map[string]any{"type": "evil", "x": 1}, true},
		{"struct with type", struct {
			Type string `json:"type"`
		}{"evil"}, true},
		{"raw with escaped key", json.RawMessage(`{"a":1,"\u0074ype":"evil"}`), true},
		{"type as a value", map[string]any{"text": "type"}, false},
		{"type in a nested object", map[string]any{"inner": map[string]any{"type": "ok"}}, false},
		{"typed key prefix", map[string]any{"types": 1}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := channellayer.NewMessage("notify", tt.v)
			if tt.wantErr {
				if !errors.Is(err, channellayer.ErrInvalid) {
					t.Fatalf("NewMessage = %s, %v; want ErrInvalid", m.Body, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewMessage: %v", err)
			}
			p, err := channellayer.ParseMessage(m.Body)
			if err != nil || p.Type != "notify" {
				t.Fatalf("ParseMessage(%s) = %q, %v; want type notify", m.Body, p.Type, err)
			}
		})
	}
}
