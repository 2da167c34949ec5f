package consumer

import (
	"testing"
	"unsafe"
)

// TestConnStaysSmall guards the memory of an idle connection: every open
// connection keeps one Conn for its life, so a field added to it (or to
// the runtime pieces it holds by value) costs each of them. A Conn is
// allocated with the runtime's 8-byte header (objects over 512 bytes
// that hold pointers have one) in the 640-byte size class; one byte more
// than fits and each Conn takes the next class, 704. Before raising the
// limit, see whether the field can live in the Server (shared) or be
// made on first use.
func TestConnStaysSmall(t *testing.T) {
	const class, header = 640, 8
	if n := unsafe.Sizeof(Conn{}); n+header > class {
		t.Errorf("a Conn takes %d bytes (+%d of header), more than the %d-byte class it fits in today: each idle connection pays for it", n, header, class)
	}
}
