// Package slicepool lends slices in a few fixed sizes, so that a queue can
// give its array back when it empties (an idle owner keeps none) and a busy
// one takes one per burst without allocating.
//
// A pool is safe for concurrent use. A slice is owned by whoever got it
// until it is put back; nothing may use it afterwards.
package slicepool

import (
	"sync"
	"unsafe"
)

// Pool lends slices of T whose capacity is one of its sizes.
type Pool[T any] struct {
	sizes []int
	pools []sync.Pool // one per size; each holds a *T, the first element of an array of that size
}

// New returns a pool of slices of the given capacities, in increasing order.
func New[T any](sizes ...int) *Pool[T] {
	p := &Pool[T]{sizes: sizes, pools: make([]sync.Pool, len(sizes))}
	for i, n := range sizes {
		p.pools[i].New = func() any { return &make([]T, n)[0] }
	}
	return p
}

// Max is the largest capacity the pool lends.
func (p *Pool[T]) Max() int { return p.sizes[len(p.sizes)-1] }

// Get returns an empty slice with room for at least n elements (n at most
// Max).
func (p *Pool[T]) Get(n int) []T {
	i := 0
	for i < len(p.sizes)-1 && p.sizes[i] < n {
		i++
	}
	first := p.pools[i].Get().(*T) // a pointer: Put boxes it without allocating
	return unsafe.Slice(first, p.sizes[i])[:0]
}

// Put gives back a slice from Get, cleared so that the pool keeps nothing
// alive. A slice of any other capacity (nil, or grown past Max by append)
// is left to the garbage collector.
func (p *Pool[T]) Put(s []T) {
	for i, n := range p.sizes {
		if cap(s) == n {
			s = s[:n]
			clear(s)
			p.pools[i].Put(&s[0])
			return
		}
	}
}

// Append appends v to s. When s is full it first moves to a pooled slice
// of the next size and gives s back, until Max; past Max it grows by
// append.
func (p *Pool[T]) Append(s []T, v T) []T {
	if n := len(s); n == cap(s) && n < p.Max() {
		grown := append(p.Get(n+1), s...)
		p.Put(s)
		s = grown
	}
	return append(s, v)
}
