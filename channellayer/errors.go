package channellayer

import "errors"

var (
	// ErrChannelFull is returned by Send when the receiving channel holds
	// its capacity of messages. The message was not delivered.
	ErrChannelFull = errors.New("channellayer: channel full")
	// ErrOverflow is returned by Receive when a group message for the
	// channel was dropped because it was full. The consumer behind the
	// channel is too slow and should be closed (websocket code 1013).
	ErrOverflow = errors.New("channellayer: channel overflowed, messages were dropped")
	// ErrNoChannel is returned for a channel name this process does not own.
	ErrNoChannel = errors.New("channellayer: no such channel (was it discarded?)")
	// ErrUnknownID is returned by History.Since when the ID is malformed,
	// unknown, or older than what the group still keeps.
	ErrUnknownID = errors.New("channellayer: unknown or expired history ID")
	// ErrUnavailable wraps errors of a layer whose server cannot be reached.
	// The call did not take effect; retry later.
	ErrUnavailable = errors.New("channellayer: layer unavailable")
	// ErrClosed is returned by calls on a closed layer.
	ErrClosed = errors.New("channellayer: layer closed")
	// ErrInvalid is returned for an empty or malformed name or message.
	ErrInvalid = errors.New("channellayer: invalid argument")
)
