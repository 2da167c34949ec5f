package channellayer

import (
	"context"
	"time"
)

var _ Directory = (*Memory)(nil)

// memCount is an entry of a Memory directory index.
type memCount struct {
	n       int
	expires time.Time
}

// SetCount implements Directory.
func (m *Memory) SetCount(ctx context.Context, index, name string, n int, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkCount(index, name, ttl); err != nil {
		return err
	}
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	idx := m.dir[index]
	if n <= 0 {
		delete(idx, name)
		if len(idx) == 0 {
			delete(m.dir, index)
		}
		return nil
	}
	if idx == nil {
		if m.dir == nil {
			m.dir = make(map[string]map[string]memCount)
		}
		idx = make(map[string]memCount)
		m.dir[index] = idx
	}
	idx[name] = memCount{n: n, expires: time.Now().Add(ttl)}
	return nil
}

// SetCounts implements DirectoryBatcher.
func (m *Memory) SetCounts(ctx context.Context, index string, counts []Count, ttl time.Duration) error {
	for _, c := range counts {
		if err := m.SetCount(ctx, index, c.Name, c.N, ttl); err != nil {
			return err
		}
	}
	return nil
}

// Top implements Directory.
func (m *Memory) Top(ctx context.Context, index string, n int) ([]Count, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.dirMu.Lock()
	var out []Count
	for name, e := range m.dir[index] {
		if now.Before(e.expires) {
			out = append(out, Count{Name: name, N: e.n})
		} else {
			delete(m.dir[index], name)
		}
	}
	m.dirMu.Unlock()
	sortCounts(out)
	if len(out) > max(n, 0) {
		out = out[:max(n, 0)]
	}
	return out, nil
}

// Counts implements Directory.
func (m *Memory) Counts(ctx context.Context, index string, names []string) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	m.dirMu.Lock()
	defer m.dirMu.Unlock()
	out := make([]int, len(names))
	for i, name := range names {
		if e, ok := m.dir[index][name]; ok && now.Before(e.expires) {
			out[i] = e.n
		}
	}
	return out, nil
}
