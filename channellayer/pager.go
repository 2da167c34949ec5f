package channellayer

import "context"

// Pager is implemented by layers that can page back through a group's
// history, from a message a client has to the ones before it. Both
// backends implement it.
type Pager interface {
	// Before returns up to n of the messages recorded before id that the
	// history still keeps, oldest first, and whether it keeps older ones
	// than those. If id is malformed, unknown or no longer kept, it returns
	// ErrUnknownID.
	Before(ctx context.Context, group, id string, n int) (msgs []Message, more bool, err error)
}
