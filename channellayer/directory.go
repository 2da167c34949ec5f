package channellayer

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Directory is implemented by layers that keep cluster-wide indexes of
// named counts (the chat's rooms with how many are online in each), so
// that the largest can be read without looking at every group. Entries
// live until they are set to zero or their TTL passes without another
// SetCount. Both backends implement it.
type Directory interface {
	// SetCount records that name counts n in index, for ttl; n <= 0
	// removes it at once.
	SetCount(ctx context.Context, index, name string, n int, ttl time.Duration) error
	// Top returns up to n entries of index with the highest counts,
	// highest first, ties by name.
	Top(ctx context.Context, index string, n int) ([]Count, error)
	// Counts returns the counts of names in index, in their order: 0 for
	// a name with no live entry.
	Counts(ctx context.Context, index string, names []string) ([]int, error)
}

// DirectoryBatcher is implemented by directories that set many entries of
// an index in one call: a node keeping the counts of its thousand rooms
// alive costs one round trip and one script, not a thousand. Both
// backends implement it.
type DirectoryBatcher interface {
	// SetCounts is SetCount for every entry of counts, all with ttl.
	SetCounts(ctx context.Context, index string, counts []Count, ttl time.Duration) error
}

var (
	_ DirectoryBatcher = (*Memory)(nil)
	_ DirectoryBatcher = (*Redis)(nil)
)

// Count is an entry of a Directory index.
type Count struct {
	Name string
	N    int
}

func checkCount(index, name string, ttl time.Duration) error {
	if index == "" || name == "" || ttl <= 0 {
		return fmt.Errorf("%w: a directory entry needs an index, a name and a positive TTL", ErrInvalid)
	}
	return nil
}

// sortCounts orders entries by count, highest first, then by name.
func sortCounts(cs []Count) {
	slices.SortFunc(cs, func(a, b Count) int {
		if a.N != b.N {
			return b.N - a.N
		}
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
}
