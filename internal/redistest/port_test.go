package redistest

import (
	"os"
	"testing"
)

// A server whose port another process took between probing and binding it
// is not taken for started, though the other answers PING on that port.
func TestStartPortTakenByAnother(t *testing.T) {
	other := Start(t)
	s := &Server{bin: Binary(t), dir: t.TempDir(), port: other.Port()}
	t.Cleanup(s.Stop)
	err := s.start()
	if err == nil {
		t.Fatalf("start on port %d, already another server's: no error", other.Port())
	}
	t.Log(err)
	if !other.Running() {
		t.Fatal("the other server stopped")
	}
	if mine, err := listens(os.Getpid(), other.Port()); err != nil || mine {
		t.Fatalf("listens(this test, the other's port) = %v, %v; want false", mine, err)
	}
}
