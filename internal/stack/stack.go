// Package stack grows the calling goroutine's stack at once, while it is
// shallow.
//
// A goroutine that starts when there is work and ends with it starts with
// the runtime's smallest stack (2 KiB, when few goroutines are parked), and
// a deep call chain then outgrows it far down, where the runtime copies
// every frame to a stack twice the size, and again. A frame as big as the
// stack wanted, taken first, makes the runtime grow it once, with little
// to copy; the stack keeps the size when the frame returns.
package stack

// Grow4K grows the calling goroutine's stack to 4 KiB, if it is smaller.
//
//go:noinline
func Grow4K() {
	var b [2560]byte
	touch4K(&b)
}

// Grow16K grows the calling goroutine's stack to 16 KiB, if it is smaller.
//
//go:noinline
func Grow16K() {
	var b [12 << 10]byte
	touch16K(&b)
}

// The touches keep the buffers: without a use the compiler drops them.

//go:noinline
func touch4K(b *[2560]byte) { b[0] = 0 }

//go:noinline
func touch16K(b *[12 << 10]byte) { b[0] = 0 }
