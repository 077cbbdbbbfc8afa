package requests

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

// chatOfSize is a chat request of exactly n bytes (n >= 100), streamed or not.
func chatOfSize(t *testing.T, n int, stream bool) string {
	t.Helper()
	head := `{"model":"m","max_tokens":2,"stream":` + map[bool]string{true: "true", false: "false"}[stream] + `,"messages":[{"content":"`
	tail := `"}]}`
	body := head + strings.Repeat("x", n-len(head)-len(tail)) + tail
	if len(body) != n {
		t.Fatalf("body of %d bytes, want %d", len(body), n)
	}
	return body
}

// TestBodyBudgetEditNeverWaits: a streamed request that gets include_usage
// added must not wait for room a second time while it holds room for its
// body. Requests that hold nothing wait in turn: a request queued in
// between would wait behind it while it waited behind that one, and both
// would be answered 503 when the wait ran out. It takes the room for its
// edit with its body's, in one wait, and proceeds; the request queued
// behind it gets its turn when it is done.
func TestBodyBudgetEditNeverWaits(t *testing.T) {
	budget := NewBodyBudget(1000, 500*time.Millisecond)
	g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{BodyBudget: budget})
	a, b := chatOfSize(t, 590, true), chatOfSize(t, 580, false)

	// A declares its length, takes room for it, and sends its body only
	// once B waits for room.
	pr, pw := io.Pipe()
	reqA, _ := http.NewRequestWithContext(t.Context(), "POST", g.front.URL+"/v1/chat/completions", pr)
	reqA.ContentLength = int64(len(a))
	stA := make(chan int, 1)
	go func() {
		res, err := g.client.Do(reqA)
		if err != nil {
			t.Error(err)
			stA <- 0
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		stA <- res.StatusCode
	}()
	basic.WaitFor(t, "A to hold room for its body", 10*time.Second, func() bool { return budget.InUse() >= int64(len(a)) })
	stB := make(chan int, 1)
	go func() { stB <- postStatus(t, g, b) }()
	basic.WaitFor(t, "B to wait for room", 10*time.Second, func() bool { return budget.Waiting() == 1 })
	if _, err := io.WriteString(pw, a); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if st := <-stA; st != http.StatusOK {
		t.Errorf("A (streamed, include_usage added): %d, want 200", st)
	}
	if st := <-stB; st != http.StatusOK {
		t.Errorf("B (queued behind A): %d, want 200", st)
	}
	allPassed(t, g, budget, 2)
}
