package redistest_test

import (
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/internal/redistest"
)

// A killed primary is replaced by one of its replicas, which the other
// replica then follows.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Replicas: 2, Password: "pw", SentinelPassword: "spw"})
	old := s.Primary(t)
	if old != s.Nodes()[0] {
		t.Fatalf("the Sentinels name %s as primary, not the first node %s", old.Addr(), s.Nodes()[0].Addr())
	}
	old.Kill()
	killed := time.Now()
	n := s.WaitFailover(t, old, 20*time.Second)
	t.Logf("%s promoted %v after the kill", n.Addr(), time.Since(killed))
	s.WaitReplicas(t, 1, 20*time.Second)
}
