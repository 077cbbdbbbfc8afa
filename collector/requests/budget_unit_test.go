package requests

import (
	"context"
	"testing"
	"time"
)

// TestBodyBudgetCounter: a step for a request holding room is taken at
// once when the room is there, even with another request waiting for more
// than is free, and refused at once, taking nothing, when it is not; a
// waiting request takes its room when releases make it.
func TestBodyBudgetCounter(t *testing.T) {
	b := NewBodyBudget(1000, 5*time.Second)
	held, err := b.acquire(context.Background(), 600)
	if err != nil || held != 600 {
		t.Fatalf("acquire 600 of 1000: %d, %v", held, err)
	}
	got := make(chan int64, 1)
	go func() {
		n, _ := b.acquire(context.Background(), 700) // waits: 400 free
		got <- n
	}()
	for b.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	// A second request, holding 300 of its own after its first step.
	other, ok := b.tryAcquire(0, 300)
	if !ok || other != 300 {
		t.Errorf("a 300-byte step with 400 free and a request waiting: %d, %v; want taken", other, ok)
	}
	start := time.Now()
	if n, ok := b.tryAcquire(other, 200); ok || n != 0 {
		t.Errorf("a 200-byte step with 100 free: %d, %v; want refused", n, ok)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the refused step took %s: it must not wait", d)
	}
	if b.InUse() != 900 {
		t.Errorf("in use %d, want 900: a refused step gives back nothing and takes nothing", b.InUse())
	}
	b.release(held)
	b.release(other)
	select {
	case n := <-got:
		if n != 700 {
			t.Errorf("the waiting request got %d, want 700", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request was not woken by the release")
	}
	b.release(700)
	if b.InUse() != 0 {
		t.Errorf("in use %d after every release, want 0", b.InUse())
	}
}
