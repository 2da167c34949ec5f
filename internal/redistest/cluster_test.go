package redistest_test

import (
	"strings"
	"testing"

	"github.com/chatterpro/chatterpro/internal/redistest"
)

func TestStartCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	if c.Len() != 3 || len(c.Addrs()) != 3 {
		t.Fatalf("cluster of %d nodes (%v), want 3", c.Len(), c.Addrs())
	}
	owners := make(map[int]bool)
	for _, slot := range []int{0, 8000, 16383} {
		o, err := c.Owner(slot)
		if err != nil {
			t.Fatal(err)
		}
		owners[o] = true
	}
	if len(owners) != 3 {
		t.Fatalf("slots 0, 8000 and 16383 are served by %d masters, want 3", len(owners))
	}
	slot, err := c.KeySlot("x:{room}:h")
	if err != nil {
		t.Fatal(err)
	}
	if other, _ := c.KeySlot("room"); other != slot {
		t.Fatalf("KEYSLOT ignores the hash tag: %d, %d", slot, other)
	}

	// A killed master takes the cluster down; restarted on its port with
	// its nodes.conf, it rejoins with its slots.
	victim, err := c.Owner(slot)
	if err != nil {
		t.Fatal(err)
	}
	c.Node(victim).Kill()
	c.Node(victim).Restart(t)
	c.WaitOK(t)
	if o, err := c.Owner(slot); err != nil || o != victim {
		t.Fatalf("after the restart slot %d is served by %d (%v), want %d", slot, o, err, victim)
	}
	out, err := c.Do(victim, "SET", "x:{room}:k", "v")
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("SET on the restarted owner: %q, %v", out, err)
	}
}
