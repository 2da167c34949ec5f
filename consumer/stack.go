package consumer

// growStack grows the calling goroutine's stack to 4 KiB at once, if it is
// smaller.
//
// The goroutines that run handlers (a dispatcher, a woken reader) start
// when there is work and end with it. The runtime starts goroutines with a
// stack the size its goroutines used on average; with no goroutine parked
// per idle connection that is its smallest, 2 KiB, and a handler chain then
// outgrows it deep inside, where copying the stack is dear (it took a
// tenth of the server's CPU in a busy fan-out). Growing it first, while it
// is shallow, is cheap; 4 KiB holds the handler chains seen so far.
//
//go:noinline
func growStack() {
	var b [2560]byte
	touch(&b)
}

//go:noinline
func touch(b *[2560]byte) { b[0] = 0 }
