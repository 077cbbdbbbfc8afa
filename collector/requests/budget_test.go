package requests

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

// budgetBody is a 64-byte chat request: a budget of 100 bytes holds one.
const budgetBody = `{"model":"m","max_tokens":2,"messages":[{"content":"hi there!"}]}`

// gate is an upstream that holds every request until opened.
type gate struct {
	open    chan struct{}
	arrived chan struct{}
	next    http.Handler
}

func newGate() *gate {
	return &gate{open: make(chan struct{}), arrived: make(chan struct{}, 100), next: fakeupstream.New(fakeupstream.Options{})}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// With the body read, the server watches the connection: the context
	// ends when the proxy gives up on the request.
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	g.arrived <- struct{}{}
	select {
	case <-g.open:
	case <-r.Context().Done():
		return
	}
	g.next.ServeHTTP(w, r)
}

// postBudget sends budgetBody and returns the status, Retry-After and body.
func postBudget(t *testing.T, ctx context.Context, g *rig) (int, string, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", g.front.URL+"/v1/chat/completions", strings.NewReader(budgetBody))
	res, err := g.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Retry-After"), b, err
}

// TestBodyBudgetFull: a body that finds no room within the wait is
// answered 503 with Retry-After, and recorded 503, not served, never
// begun; the first
// request, which had room, is unharmed, and gives its room back.
func TestBodyBudgetFull(t *testing.T) {
	gt := newGate()
	budget := NewBodyBudget(100, 50*time.Millisecond)
	g := newRig(t, gt, Options{BodyBudget: budget})
	first := make(chan int, 1)
	go func() {
		st, _, _, err := postBudget(t, t.Context(), g)
		if err != nil {
			t.Error(err)
		}
		first <- st
	}()
	<-gt.arrived // the first body is held
	if got := budget.InUse(); got != int64(len(budgetBody)) {
		t.Errorf("in use = %d, want the first body's %d bytes", got, len(budgetBody))
	}
	st, retry, body, err := postBudget(t, t.Context(), g)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error struct{ Message string } }
	if st != http.StatusServiceUnavailable || retry == "" || json.Unmarshal(body, &e) != nil ||
		!strings.Contains(e.Error.Message, "proxy.max_buffered_bytes") {
		t.Errorf("second request: %d, Retry-After %q, %s; want 503 with Retry-After and a message naming proxy.max_buffered_bytes", st, retry, body)
	}
	if n := budget.Refused(); n != 1 {
		t.Errorf("refused = %d, want 1", n)
	}
	refused := g.rec.wait(t, 1)[0]
	checkSpan(t, refused, estimator.Span{
		Upstream: upstreamName, Status: "503", PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: false,
	})
	// Begun, it would have counted in the simulator's load and been
	// charged while it waited.
	g.rec.mu.Lock()
	begun := g.rec.begins[refused.Key]
	g.rec.mu.Unlock()
	if begun != 0 {
		t.Errorf("the refused request was begun %d times, want never", begun)
	}
	openAndDrain(t, gt, g, budget, first, 2)
}

// TestBodyBudgetWaits: a body that finds no room waits for it while the
// wait lasts, and goes through once the body before it is done.
func TestBodyBudgetWaits(t *testing.T) {
	gt := newGate()
	budget := NewBodyBudget(100, 10*time.Second)
	g := newRig(t, gt, Options{BodyBudget: budget})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if st, _, _, err := postBudget(t, t.Context(), g); err != nil || st != http.StatusOK {
				t.Errorf("request: %d, %v; want 200", st, err)
			}
		})
	}
	<-gt.arrived
	basic.WaitFor(t, "the second body to wait for room", 10*time.Second, func() bool { return budget.Waiting() == 1 })
	if len(gt.arrived) != 0 {
		t.Error("the second request reached the upstream while the first held the budget")
	}
	close(gt.open)
	wg.Wait()
	g.rec.wait(t, 2)
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still in use after every request ended", n)
	}
}

// TestBodyBudgetReleased: the room a body took comes back when the client
// goes away and when the upstream is down.
func TestBodyBudgetReleased(t *testing.T) {
	t.Run("client gone", func(t *testing.T) {
		gt := newGate()
		budget := NewBodyBudget(100, 50*time.Millisecond)
		g := newRig(t, gt, Options{BodyBudget: budget})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, _, _, err := postBudget(t, ctx, g); err == nil {
				t.Error("the canceled request got an answer")
			}
		}()
		<-gt.arrived
		cancel()
		<-done
		if s := g.rec.wait(t, 1)[0]; s.Status != estimator.StatusClientClosed {
			t.Errorf("status %q, want client_closed", s.Status)
		}
		if n := budget.InUse(); n != 0 {
			t.Errorf("%d bytes still in use after the client went away", n)
		}
	})
	t.Run("upstream down", func(t *testing.T) {
		budget := NewBodyBudget(100, 50*time.Millisecond)
		g := newRig(t, newGate(), Options{BodyBudget: budget, Target: downTarget(t)})
		for range 3 { // each would find no room if the one before kept its bytes
			if st, _, _, err := postBudget(t, t.Context(), g); err != nil || st != http.StatusBadGateway {
				t.Fatalf("request to a down upstream: %d, %v; want 502", st, err)
			}
		}
		g.rec.wait(t, 3)
		if n := budget.InUse(); n != 0 {
			t.Errorf("%d bytes still in use after the upstream failed", n)
		}
	})
}

// TestBodyBudgetCountsTheEditedCopy: a streamed request sent with
// stream_options.include_usage added keeps only the edited copy (which
// serves the prompt estimate too): it holds room for that copy while it
// runs, and gives it back. One request whose copy is larger than the whole
// budget still passes alone, holding all of it.
func TestBodyBudgetCountsTheEditedCopy(t *testing.T) {
	body := `{"model":"m","stream":true,"max_tokens":2,"messages":[{"content":"hi there!"}]}`
	edit, ok := dialect.IncludeUsageEdit([]byte(body))
	edited := edit.Apply([]byte(body))
	if !ok {
		t.Fatal("the test's body is not edited")
	}
	for _, tt := range []struct {
		name        string
		size, inUse int64
	}{
		{"the copy counted", 1000, int64(len(edited))},
		{"alone, larger than the budget", int64(len(body)) + 10, int64(len(body)) + 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gt := newGate()
			budget := NewBodyBudget(tt.size, 50*time.Millisecond)
			g := newRig(t, gt, Options{BodyBudget: budget})
			done := make(chan int, 1)
			go func() { done <- postStatus(t, g, body) }()
			<-gt.arrived
			if got := budget.InUse(); got != tt.inUse {
				t.Errorf("in use = %d, want %d (the client's body %d bytes, the edited copy %d, the budget %d)",
					got, tt.inUse, len(body), len(edited), tt.size)
			}
			openAndDrain(t, gt, g, budget, done, 1)
		})
	}
}

// openAndDrain lets the gated request answering on first through, waits
// for records records, and checks that the budget is all given back.
func openAndDrain(t *testing.T, gt *gate, g *rig, budget *BodyBudget, first <-chan int, records int) {
	t.Helper()
	close(gt.open)
	if st := <-first; st != http.StatusOK {
		t.Errorf("first request: %d, want 200", st)
	}
	g.rec.wait(t, records)
	if n := budget.InUse(); n != 0 {
		t.Errorf("%d bytes still in use after every request ended", n)
	}
}

// postStatus sends a chat request and returns its status (0 when it fails).
func postStatus(t *testing.T, g *rig, body string) int {
	return postReader(t, g, strings.NewReader(body), int64(len(body)))
}

// postReader sends a chat request of length bytes (-1: unknown, sent
// chunked) from body and returns its status (0 when it fails).
func postReader(t *testing.T, g *rig, body io.Reader, length int64) int {
	req, _ := http.NewRequestWithContext(t.Context(), "POST", g.front.URL+"/v1/chat/completions", body)
	req.ContentLength = length
	res, err := g.client.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// TestBodyBudgetClientGoneWhileWaiting: a client that leaves while its
// body waits for room is recorded client_closed, not counted as a refusal
// and not warned about: the budget did not refuse it.
func TestBodyBudgetClientGoneWhileWaiting(t *testing.T) {
	gt := newGate()
	budget := NewBodyBudget(100, 10*time.Second)
	g := newRig(t, gt, Options{BodyBudget: budget})
	first := make(chan int, 1)
	go func() { first <- postStatus(t, g, budgetBody) }()
	<-gt.arrived
	// Served directly: an HTTP/1 server notices a client leaving only once
	// the body is read; HTTP/2 cancels the request's context at the
	// stream's reset, as this does.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	w := httptest.NewRecorder()
	go func() {
		defer close(done)
		req := httptest.NewRequestWithContext(ctx, "POST", "/v1/chat/completions", strings.NewReader(budgetBody))
		g.proxy.ServeHTTP(w, req)
	}()
	basic.WaitFor(t, "the second body to wait for room", 10*time.Second, func() bool { return budget.Waiting() == 1 })
	cancel()
	<-done
	if w.Code == http.StatusServiceUnavailable || budget.Waiting() != 0 {
		t.Errorf("answered %d to a client gone, %d still waiting", w.Code, budget.Waiting())
	}
	if s := g.rec.wait(t, 1)[0]; s.Status != estimator.StatusClientClosed || s.Served {
		t.Errorf("record status %q served %v, want client_closed, not served", s.Status, s.Served)
	}
	if n := budget.Refused(); n != 0 {
		t.Errorf("refused = %d, want 0", n)
	}
	if logs := g.logs.String(); strings.Contains(logs, "level=WARN") {
		t.Errorf("a warning for a client that left:\n%s", logs)
	}
	openAndDrain(t, gt, g, budget, first, 2)
}
