package consumer_test

import (
	"testing"

	"github.com/chatterpro/chatterpro/consumer"
)

func TestScopeParam(t *testing.T) {
	s := consumer.Scope{Params: []consumer.Param{{Name: "room", Value: "lobby"}, {Name: "id", Value: "7"}}}
	for name, want := range map[string]string{"room": "lobby", "id": "7", "absent": ""} {
		if got := s.Param(name); got != want {
			t.Errorf("Param(%q) = %q, want %q", name, got, want)
		}
	}
	var empty consumer.Scope
	if got := empty.Param("room"); got != "" {
		t.Errorf("Param of a scope without params = %q, want empty", got)
	}
}
