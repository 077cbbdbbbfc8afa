package fakeupstream

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBatchingPaces: with Options.Batch, n concurrent requests (streamed
// and whole) each take about tokens × Step(n), so the aggregate rate is the
// model's TokensPerSecond(n), several times one request's rate alone.
func TestBatchingPaces(t *testing.T) {
	b := &Batching{StepBase: 4 * time.Millisecond, StepPerRequest: 250 * time.Microsecond}
	s, err := Start(t.Context(), Options{Batch: b})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()

	const tokens = 40
	run := func(n int) (time.Duration, int) {
		var wg sync.WaitGroup
		peak := 0
		var mu sync.Mutex
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprintf(`{"model":"m","stream":%t,"max_tokens":%d,"messages":[{"content":"hi"}]}`, i%2 == 0, tokens)
				res, err := client.Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				peak = max(peak, s.Batch())
				mu.Unlock()
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}()
		}
		wg.Wait()
		return time.Since(start), peak
	}
	for _, n := range []int{1, 16} {
		took, peak := run(n)
		want := time.Duration(tokens) * b.Step(n)
		// Never faster than the schedule (a little, while the batch fills);
		// later only when the machine is starved.
		if took < want*8/10 || took > want*2 {
			t.Errorf("%d requests of %d tokens took %v, want about %v (step %v)", n, tokens, took, want, b.Step(n))
		}
		if n > 1 && peak < n/2 {
			t.Errorf("Batch() peaked at %d with %d requests in flight", peak, n)
		}
		t.Logf("batch %d: %v (model %v), %.0f tok/s (model %.0f)", n, took, want, float64(n*tokens)/took.Seconds(), b.TokensPerSecond(n))
	}
	if s.Batch() != 0 {
		t.Errorf("Batch() = %d after every request ended", s.Batch())
	}
	if r1, r16 := b.TokensPerSecond(1), b.TokensPerSecond(16); r16 < 5*r1 {
		t.Errorf("aggregate rate at batch 16 %.0f tok/s, want several times batch 1's %.0f", r16, r1)
	}
}
