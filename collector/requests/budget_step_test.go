package requests

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

// holdRoom sends a chat request that declares n bytes and holds its room
// in the budget until the returned func sends its body; that func returns
// the request's status.
func holdRoom(t *testing.T, g *rig, budget *BodyBudget, n int) func() int {
	t.Helper()
	body := chatOfSize(t, n, false)
	before := budget.InUse()
	pr, pw := io.Pipe()
	st := make(chan int, 1)
	go func() { st <- postReader(t, g, pr, int64(n)) }()
	basic.WaitFor(t, "the first request to hold room", 10*time.Second, func() bool { return budget.InUse() > before })
	return func() int {
		go func() {
			io.WriteString(pw, body)
			pw.Close()
		}()
		return <-st
	}
}

// TestBodyOfUnknownLengthEndsAtStep: a body of unknown length that ends
// exactly where its room ends (at a growth step, or at max_body_bytes)
// needs no more room: it passes even when none is left. One byte more is
// still told from it (413 over max_body_bytes).
func TestBodyOfUnknownLengthEndsAtStep(t *testing.T) {
	room := bodyStep + dialect.MaxIncludeUsageGrowth // what a first step holds
	for _, c := range []struct {
		name    string
		maxBody int64
		extra   int64 // free room beside two first steps
		size    int
		want    int
	}{
		{"at a step", 4 * bodyStep, bodyStep / 2, bodyStep, http.StatusOK},
		{"at max_body_bytes", bodyStep, 0, bodyStep, http.StatusOK},
		{"a byte over max_body_bytes", bodyStep, 0, bodyStep + 1, http.StatusRequestEntityTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			budget := NewBodyBudget(2*room+c.extra, 200*time.Millisecond)
			g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{BodyBudget: budget, MaxRequestBytes: c.maxBody})
			first := holdRoom(t, g, budget, bodyStep)
			if st := postChunked(t, g, chatOfSize(t, c.size, false)); st != c.want {
				t.Errorf("a body of unknown length of %d bytes, max_body_bytes %d, %d bytes free after its first step: %d, want %d",
					c.size, c.maxBody, c.extra, st, c.want)
			}
			if st := first(); st != http.StatusOK {
				t.Errorf("first: %d, want 200", st)
			}
			allPassed(t, g, budget, 2)
		})
	}
}

// TestBodyOfUnknownLengthGrowsBehindWaiter: a body of unknown length that
// needs its next step while another request waits for more room than is
// free takes the step at once, ahead of the waiting request, since the
// room for it is there (x/sync's TryAcquire, tried first, refused it
// whenever anyone waited); both pass.
func TestBodyOfUnknownLengthGrowsBehindWaiter(t *testing.T) {
	budget := NewBodyBudget(500<<10, 5*time.Second)
	g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{BodyBudget: budget, MaxRequestBytes: 300 << 10})
	first := holdRoom(t, g, budget, 300<<10) // 300 KiB held until its body comes

	// C: a body of unknown length, its first 64 KiB step held.
	pr, pw := io.Pipe()
	stC := make(chan int, 1)
	go func() { stC <- postReader(t, g, pr, -1) }()
	basic.WaitFor(t, "C to hold its first step", 10*time.Second, func() bool { return budget.InUse() > 300<<10+bodyStep })

	// Q waits for 200 KiB, more than the ~136 KiB free.
	stQ := make(chan int, 1)
	go func() { stQ <- postStatus(t, g, chatOfSize(t, 200<<10, false)) }()
	basic.WaitFor(t, "Q to wait for room", 10*time.Second, func() bool { return budget.Waiting() == 1 })

	// C's body needs a second step, for which there is room.
	go func() {
		io.WriteString(pw, chatOfSize(t, 100<<10, false))
		pw.Close()
	}()
	// C is answered while the first still holds its room and Q waits:
	// its step did not wait.
	basic.WaitFor(t, "C to be answered", 10*time.Second, func() bool { return len(stC) > 0 })
	if st := first(); st != http.StatusOK {
		t.Errorf("first: %d, want 200", st)
	}
	if st := <-stC; st != http.StatusOK {
		t.Errorf("C (unknown length, grew while Q waited): %d, want 200", st)
	}
	if st := <-stQ; st != http.StatusOK {
		t.Errorf("Q: %d, want 200", st)
	}
	allPassed(t, g, budget, 3)
}

// allPassed waits for n requests to end and checks that the budget refused
// none and has all its room back.
func allPassed(t *testing.T, g *rig, budget *BodyBudget, n int) {
	t.Helper()
	g.rec.wait(t, n)
	if n := budget.Refused(); n != 0 {
		t.Errorf("refused = %d, want 0", n)
	}
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still in use after every request ended", n)
	}
}
