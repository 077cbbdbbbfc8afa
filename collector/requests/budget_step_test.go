package requests

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
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
	waitFor(t, "the first request to hold room", func() bool { return budget.InUse() > before })
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
	room := bodyStep + maxIncludeUsageGrowth // what a first step holds
	for _, c := range []struct {
		name      string
		maxBody   int64
		extra     int64 // free room beside two first steps
		size      int
		want int
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
			g.rec.wait(t, 2)
			if n := budget.Refused(); n != 0 {
				t.Errorf("refused = %d, want 0", n)
			}
			if n := budget.InUse(); n != 0 {
				t.Errorf("%d bytes still in use after every request ended", n)
			}
		})
	}
}

