package layertest

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// directory returns the Directory of the layer and of its peer, or false
// (and logs why) if the backend does not implement it.
func (e *env) directory() (da, db channellayer.Directory, ok bool) {
	e.t.Helper()
	da, ok = e.a.(channellayer.Directory)
	if !ok {
		e.t.Logf("%T does not implement channellayer.Directory: rule does not apply", e.a)
		return nil, nil, false
	}
	db, ok = e.peer().(channellayer.Directory)
	if !ok {
		e.t.Fatalf("Layer implements channellayer.Directory, its peer %T does not", e.peer())
	}
	return da, db, true
}

func (e *env) setCount(d channellayer.Directory, index, name string, n int, ttl time.Duration) {
	e.t.Helper()
	if err := d.SetCount(e.ctx(waitFor), index, name, n, ttl); err != nil {
		e.t.Fatalf("SetCount(%q, %q, %d): %v", index, name, n, err)
	}
}

func (e *env) top(d channellayer.Directory, index string, n int, want ...channellayer.Count) {
	e.t.Helper()
	got, err := d.Top(e.ctx(waitFor), index, n)
	if err != nil {
		e.t.Fatalf("Top(%q, %d): %v", index, n, err)
	}
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		e.t.Errorf("Top(%q, %d) = %v, want %v", index, n, got, want)
	}
}

func (e *env) counts(d channellayer.Directory, index string, names []string, want ...int) {
	e.t.Helper()
	got, err := d.Counts(e.ctx(waitFor), index, names)
	if err != nil {
		e.t.Fatalf("Counts(%q, %v): %v", index, names, err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("Counts(%q, %v) = %v, want %v", index, names, got, want)
	}
}

// checkDirectory: counts set on either process are read on both, the
// highest first (ties by name); a count of zero removes an entry; an entry
// not set again within its TTL is gone; indexes are separate.
func checkDirectory(e *env) {
	da, db, ok := e.directory()
	if !ok {
		return
	}
	idx := e.name("dir")
	long := time.Minute
	e.setCount(da, idx, "x", 3, long)
	e.setCount(db, idx, "y", 5, long)
	e.setCount(da, idx, "z", 1, long)
	e.setCount(db, idx, "w", 3, long)
	c := func(name string, n int) channellayer.Count { return channellayer.Count{Name: name, N: n} }
	for _, d := range []channellayer.Directory{da, db} {
		e.top(d, idx, 10, c("y", 5), c("w", 3), c("x", 3), c("z", 1))
		e.top(d, idx, 2, c("y", 5), c("w", 3))
		e.top(d, idx, 0)
		e.counts(d, idx, []string{"x", "nope", "y"}, 3, 0, 5)
	}
	e.setCount(db, idx, "x", 7, long) // set again: replaced
	e.top(da, idx, 1, c("x", 7))
	e.setCount(da, idx, "x", 0, long) // zero: removed
	e.top(db, idx, 10, c("y", 5), c("w", 3), c("z", 1))
	e.counts(db, idx, []string{"x"}, 0)
	e.top(da, e.name("dir"), 10) // another index

	ttl := 300 * time.Millisecond
	e.setCount(da, idx, "brief", 9, ttl)
	e.setCount(db, idx, "z", 2, ttl)
	e.top(db, idx, 2, c("brief", 9), c("y", 5))
	e.s.Sleep(ttl + 100*time.Millisecond)
	e.top(da, idx, 10, c("y", 5), c("w", 3))
	e.counts(db, idx, []string{"brief", "z", "w"}, 0, 0, 3)

	if err := da.SetCount(e.ctx(waitFor), "", "x", 1, long); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("SetCount with an empty index: %v, want %v", err, channellayer.ErrInvalid)
	}
}

// checkDirectorySetCounts: SetCounts sets many entries at once (more than
// one call's worth), read on both processes as if set one by one; a count
// of zero among them removes an entry; their TTL counts; a bad entry
// fails the call.
func checkDirectorySetCounts(e *env) {
	da, db, ok := e.directory()
	if !ok {
		return
	}
	ba, okA := da.(channellayer.DirectoryBatcher)
	bb, okB := db.(channellayer.DirectoryBatcher)
	if !okA || !okB {
		e.t.Skip("the backend does not implement channellayer.DirectoryBatcher")
	}
	idx := e.name("dir")
	long := time.Minute
	c := func(name string, n int) channellayer.Count { return channellayer.Count{Name: name, N: n} }
	e.setCount(da, idx, "gone", 1000, long)
	many := []channellayer.Count{c("gone", 0)}
	for i := range 600 {
		many = append(many, c(fmt.Sprintf("r%03d", i), i+1))
	}
	if err := ba.SetCounts(e.ctx(waitFor), idx, many, long); err != nil {
		e.t.Fatalf("SetCounts: %v", err)
	}
	for _, d := range []channellayer.Directory{da, db} {
		e.top(d, idx, 3, c("r599", 600), c("r598", 599), c("r597", 598))
		e.counts(d, idx, []string{"gone", "r000", "r499", "r500"}, 0, 1, 500, 501)
	}
	ttl := 300 * time.Millisecond
	if err := bb.SetCounts(e.ctx(waitFor), idx, []channellayer.Count{c("brief", 9000), c("r000", 2)}, ttl); err != nil {
		e.t.Fatalf("SetCounts: %v", err)
	}
	e.top(da, idx, 2, c("brief", 9000), c("r599", 600))
	e.s.Sleep(ttl + 100*time.Millisecond)
	e.top(db, idx, 1, c("r599", 600))
	e.counts(da, idx, []string{"brief", "r000", "r001"}, 0, 0, 2)

	if err := ba.SetCounts(e.ctx(waitFor), idx, []channellayer.Count{c("ok", 1), c("", 1)}, long); !errors.Is(err, channellayer.ErrInvalid) {
		e.t.Errorf("SetCounts with an empty name: %v, want %v", err, channellayer.ErrInvalid)
	}
}
