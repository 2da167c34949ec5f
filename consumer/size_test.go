package consumer

import (
	"testing"
	"unsafe"
)

// TestConnStaysSmall guards the memory of an idle connection: every open
// connection keeps one Conn for its life, so a field added to it (or to
// the runtime pieces it holds by value) costs each of them. The limit is
// the size class a Conn is allocated in today (640 bytes); one byte over
// it and each Conn takes the next class, 704. Before raising the limit,
// see whether the field can live in the Server (shared) or be made on
// first use.
func TestConnStaysSmall(t *testing.T) {
	const limit = 640
	if n := unsafe.Sizeof(Conn{}); n > limit {
		t.Errorf("a Conn takes %d bytes, more than the %d it fits in today: each idle connection pays for it", n, limit)
	}
}
