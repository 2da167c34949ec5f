package tasks_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatterpro/chatterpro/consumer/internal/tasks"
)

// Stop waits for the running goroutines and refuses new ones.
func TestStopWaitsAndRefuses(t *testing.T) {
	var g tasks.Group
	release := make(chan struct{})
	var ended atomic.Bool
	if !g.Go(func() { <-release; ended.Store(true) }) {
		t.Fatal("Go refused before Stop")
	}
	stopped := make(chan struct{})
	go func() { g.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a goroutine ran")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-stopped
	if !ended.Load() {
		t.Fatal("Stop returned before the goroutine ended")
	}
	if g.Go(func() { t.Error("ran after Stop") }) || g.Add() {
		t.Fatal("a goroutine was admitted after Stop")
	}
}

func TestGrowStack(t *testing.T) {
	tasks.GrowStack() // must not fail; its effect is on performance only
}
