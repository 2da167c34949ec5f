package channellayer

import (
	"context"
	"fmt"
	"sort"
)

// GroupSendRecordedOnce implements IdempotentRecorder.
func (m *Memory) GroupSendRecordedOnce(ctx context.Context, group, key string, msg Message) (Message, bool, error) {
	if err := checkRecordKey(key); err != nil {
		return Message{}, false, err
	}
	if err := m.check(ctx, msg); err != nil {
		return Message{}, false, err
	}
	h := m.groupHistory(group, true)
	h.mu.Lock()
	for h.gone { // forgotten meanwhile (GroupTTL)
		h.mu.Unlock()
		h = m.groupHistory(group, true)
		h.mu.Lock()
	}
	defer h.mu.Unlock()
	kept := m.kept(h)
	if id, ok := h.keys[key]; ok {
		if i, found := findID(kept, id); found {
			return kept[i], true, nil
		}
		delete(h.keys, key) // its message is no longer kept
	}
	rec := m.record(group, h, msg)
	if h.keys == nil {
		h.keys = make(map[string]string)
	}
	h.keys[key] = rec.ID
	if len(h.keys) > 2*m.historySize {
		// Forget the keys of messages no longer kept: at most once every
		// historySize keyed records, so it costs O(1) per record.
		oldest := h.kept(m.historySize)[0].ID
		for k, id := range h.keys {
			if CompareID(id, oldest) < 0 {
				delete(h.keys, k)
			}
		}
	}
	return rec, false, nil
}

// findID returns the index of id in msgs, which are in ID order.
func findID(msgs []Message, id string) (int, bool) {
	i := sort.Search(len(msgs), func(i int) bool { return CompareID(msgs[i].ID, id) >= 0 })
	return i, i < len(msgs) && msgs[i].ID == id
}

// Before implements Pager.
func (m *Memory) Before(ctx context.Context, group, id string, n int) ([]Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if ValidID(id) {
		if h := m.groupHistory(group, false); h != nil {
			h.mu.Lock()
			defer h.mu.Unlock()
			kept := h.kept(m.historySize)
			if i, ok := findID(kept, id); ok {
				start := max(0, i-max(n, 0))
				var out []Message
				if start < i {
					out = append(out, kept[start:i]...)
				}
				return out, start > 0, nil
			}
		}
	}
	return nil, false, fmt.Errorf("history of %q before %q: %w", group, id, ErrUnknownID)
}
