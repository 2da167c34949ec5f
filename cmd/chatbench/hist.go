package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram is a log-bucketed latency histogram in the spirit of HDR
// histograms: values below 2*subCount nanoseconds are exact, larger ones
// fall into buckets whose width is 1/subCount of their magnitude (about 3 %
// relative error). Recording is O(1) and allocation-free; it is not safe
// for concurrent use: each goroutine keeps its own and they are merged.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
	sum    float64
}

const (
	subBits     = 5
	subCount    = 1 << subBits
	histBuckets = 2*subCount + (64-subBits-1)*subCount
)

// bucketOf returns the bucket index of v (nanoseconds, clamped at 0).
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2*subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1 // >= 1
	top := u >> shift                    // in [subCount, 2*subCount)
	return 2*subCount + (shift-1)*subCount + int(top-subCount)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	shift := (i-2*subCount)/subCount + 1
	top := uint64(i-2*subCount)%subCount + subCount
	lo64 := top << shift
	return int64(lo64), int64(lo64 + (1 << shift) - 1)
}

func (h *histogram) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) reset() { *h = histogram{} }

// quantile returns the value at quantile q (0..1): the upper end of the
// bucket holding the ceil(q*n)-th smallest value, capped at the maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return time.Duration(min(hi, h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}
