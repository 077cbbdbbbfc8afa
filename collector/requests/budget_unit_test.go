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

// TestBodyBudgetInTurn: requests holding nothing wait in turn: a large one
// waiting is served before small ones that came after it, though they
// would fit sooner; one whose wait ends (timeout, or its client gone)
// leaves the queue holding nothing, and those behind it move up.
func TestBodyBudgetInTurn(t *testing.T) {
	b := NewBodyBudget(1000, 5*time.Second)
	first, _ := b.acquire(context.Background(), 500)
	order := make(chan int64, 3)
	go func() {
		n, _ := b.acquire(context.Background(), 800) // waits: 500 free
		order <- n
	}()
	waitWaiting(t, b, 1)
	go func() {
		n, _ := b.acquire(context.Background(), 300) // fits now, but comes after the 800
		order <- n
	}()
	waitWaiting(t, b, 2)
	if b.InUse() != 500 {
		t.Fatalf("in use %d, want 500: the 300 must not pass the 800 waiting before it", b.InUse())
	}
	b.release(first) // room for the 800, not for both
	if n := <-order; n != 800 {
		t.Errorf("served %d first, want the 800", n)
	}
	waitWaiting(t, b, 1)
	b.release(800)
	if n := <-order; n != 300 {
		t.Errorf("served %d, want the 300", n)
	}
	b.release(300)

	// A wait that ends: by the budget's wait, then by the client leaving.
	short := NewBodyBudget(1000, 50*time.Millisecond)
	held, _ := short.acquire(context.Background(), 1000)
	if n, err := short.acquire(context.Background(), 10); n != 0 || err == nil {
		t.Errorf("acquire past the wait: %d, %v; want 0 and an error", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := short.acquire(ctx, 10)
		gone <- err
	}()
	waitWaiting(t, short, 1)
	cancel()
	if err := <-gone; err == nil {
		t.Error("a waiting request whose client left got room")
	}
	short.release(held)
	if short.InUse() != 0 || short.Waiting() != 0 {
		t.Errorf("in use %d, waiting %d after every wait ended and every release; want 0, 0", short.InUse(), short.Waiting())
	}
	if n, err := short.acquire(context.Background(), 1000); n != 1000 || err != nil {
		t.Errorf("the whole budget after the queue emptied: %d, %v", n, err)
	}
}

func waitWaiting(t *testing.T, b *BodyBudget, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.Waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiting, want %d", b.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
