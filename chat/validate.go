package chat

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on user input, counted in Unicode code points after trimming.
const (
	MaxNicknameLen = 32
	MaxRoomLen     = 64
	MaxTextLen     = 2000
)

// Sentinel errors of the validators. The errors returned by ValidNickname,
// ValidRoom and ValidText match one of these with errors.Is; their Error
// text is a sentence meant for the user (the join page shows it).
var (
	ErrBadNickname = errors.New("chat: invalid nickname")
	ErrBadRoom     = errors.New("chat: invalid room name")
	ErrBadText     = errors.New("chat: invalid message text")
)

// inputError is a validation error: a sentence for the user that matches
// one of the sentinels above.
type inputError struct {
	kind error
	msg  string
}

func (e *inputError) Error() string { return e.msg }
func (e *inputError) Unwrap() error { return e.kind }

func invalid(kind error, msg string) error { return &inputError{kind: kind, msg: msg} }

// ValidNickname trims s and checks that it is 1–32 characters long and has
// no control characters. It returns the trimmed nickname.
func ValidNickname(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", invalid(ErrBadNickname, "Please enter a nickname.")
	case !utf8.ValidString(s):
		return "", invalid(ErrBadNickname, "Your nickname contains invalid characters.")
	case utf8.RuneCountInString(s) > MaxNicknameLen:
		return "", invalid(ErrBadNickname, "Your nickname can be at most 32 characters long.")
	case hasControl(s):
		return "", invalid(ErrBadNickname, "Your nickname must not contain control characters such as tabs or line breaks.")
	}
	return s, nil
}

// ValidRoom trims s and checks that it is 1–64 characters long and has no
// control characters and no '/'. It returns the trimmed room name. The names
// "." and ".." are refused too: no URL can carry them as a path segment.
func ValidRoom(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", invalid(ErrBadRoom, "Please choose a room or enter a room name.")
	case !utf8.ValidString(s):
		return "", invalid(ErrBadRoom, "The room name contains invalid characters.")
	case utf8.RuneCountInString(s) > MaxRoomLen:
		return "", invalid(ErrBadRoom, "The room name can be at most 64 characters long.")
	case hasControl(s):
		return "", invalid(ErrBadRoom, "The room name must not contain control characters such as tabs or line breaks.")
	case strings.ContainsRune(s, '/'):
		return "", invalid(ErrBadRoom, "The room name must not contain a slash (/).")
	case s == "." || s == "..":
		// Browsers and ServeMux resolve these as path segments, so such a
		// room could never be reached by its URL.
		return "", invalid(ErrBadRoom, "The room name cannot be just dots.")
	}
	return s, nil
}

// ValidText trims s and checks that it is 1–2000 code points long. It
// returns the trimmed text. Line breaks inside the text are allowed.
func ValidText(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", invalid(ErrBadText, "The message is empty.")
	case !utf8.ValidString(s):
		return "", invalid(ErrBadText, "The message contains invalid characters.")
	case utf8.RuneCountInString(s) > MaxTextLen:
		return "", invalid(ErrBadText, "The message can be at most 2000 characters long.")
	}
	return s, nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}
