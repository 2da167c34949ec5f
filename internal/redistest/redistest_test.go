package redistest_test

import (
	"testing"

	"github.com/chatterpro/chatterpro/internal/leakcheck"
	"github.com/chatterpro/chatterpro/internal/redistest"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

func TestStartKillRestart(t *testing.T) {
	s := redistest.Start(t)
	if err := redistest.Ping(s.Addr()); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	s.Kill()
	if err := redistest.Ping(s.Addr()); err == nil {
		t.Fatal("ping after kill succeeded")
	}
	addr := s.Addr()
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := redistest.Ping(s.Addr()); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

func TestStartAppendOnly(t *testing.T) {
	s := redistest.StartOpts(t, redistest.Options{AppendOnly: true})
	if err := redistest.Ping(s.Addr()); err != nil {
		t.Fatal(err)
	}
}
