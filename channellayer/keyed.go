package channellayer

import (
	"context"
	"fmt"
)

// IdempotentRecorder is implemented by layers that can record a message
// once per key, so that a sender may send it again (a retry after a lost
// answer, from any process) without it being recorded twice. Both backends
// implement it.
type IdempotentRecorder interface {
	// GroupSendRecordedOnce is GroupSendRecorded for a message named by
	// key. If the group's history still keeps a message recorded with the
	// same key, it returns that message, as recorded, with again set, and
	// records and sends nothing. Of concurrent calls with one key, on any
	// processes, exactly one records. A key is remembered as long as the
	// history keeps its message; keys are 1 to MaxRecordKey bytes.
	GroupSendRecordedOnce(ctx context.Context, group, key string, m Message) (rec Message, again bool, err error)
}

// MaxRecordKey is the longest key GroupSendRecordedOnce takes, in bytes.
const MaxRecordKey = 256

func checkRecordKey(key string) error {
	if key == "" || len(key) > MaxRecordKey {
		return fmt.Errorf("%w: a record key must be 1 to %d bytes", ErrInvalid, MaxRecordKey)
	}
	return nil
}
