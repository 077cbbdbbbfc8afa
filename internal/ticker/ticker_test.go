package ticker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func() {
			if n.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after ctx was cancelled")
	}
	if got := n.Load(); got < 3 {
		t.Errorf("f called %d times, want at least 3", got)
	}
}

func TestEveryOrWakes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := make(chan struct{})
	called := make(chan struct{})
	go EveryOr(ctx, time.Hour, wake, func() { called <- struct{}{} })
	wake <- struct{}{}
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("a wake did not call f")
	}
}

func TestEveryReturnsWhenDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Every(ctx, time.Hour, func() { t.Error("f called after ctx was done") })
}
