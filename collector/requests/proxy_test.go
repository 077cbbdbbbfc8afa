package requests

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/testlog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	upstreamName = "test-upstream"
	apiKey       = "sk-test-4f3c2b1a0918" // must never show in a span or a log
)

var testSecret = []byte("0123456789abcdef-node-secret")

// recorder is a Recorder that keeps every call. End never blocks, however
// many requests a test makes.
type recorder struct {
	mu     sync.Mutex
	begins map[string]int // by Key
	ends   []estimator.Span
	grew   chan struct{} // closed (and replaced) at every End
}

func newRecorder() *recorder {
	return &recorder{begins: make(map[string]int), grew: make(chan struct{})}
}

func (r *recorder) Begin(s estimator.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begins[s.Key]++
}

func (r *recorder) End(s estimator.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, s)
	close(r.grew)
	r.grew = make(chan struct{})
}

// endCount is the number of End calls so far.
func (r *recorder) endCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ends)
}

// wait waits until End has been called at least n times, and returns a
// copy of the spans ended so far.
func (r *recorder) wait(t *testing.T, n int) []estimator.Span {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.ends) >= n {
			out := slices.Clone(r.ends)
			r.mu.Unlock()
			return out
		}
		grew := r.grew
		r.mu.Unlock()
		select {
		case <-grew:
		case <-deadline:
			t.Fatalf("End was called %d times, want %d", r.endCount(), n)
		}
	}
}

// span waits for the one End of the test, and checks Begin and End came
// once each for its request.
func (r *recorder) span(t *testing.T) estimator.Span {
	t.Helper()
	ends := r.wait(t, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(ends) != 1 {
		t.Fatalf("End called %d times, want 1", len(ends))
	}
	s := ends[0]
	if n := r.begins[s.Key]; n != 1 || len(r.begins) != 1 {
		t.Fatalf("Begin calls = %v, want one for %q", r.begins, s.Key)
	}
	return s
}

// unbegun waits for the one End of the test, of a request the proxy
// answered before forwarding it, and checks it was never begun.
func (r *recorder) unbegun(t *testing.T) estimator.Span {
	t.Helper()
	ends := r.wait(t, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(ends) != 1 || len(r.begins) != 0 {
		t.Fatalf("End called %d times, Begin calls %v; want one End, no Begin", len(ends), r.begins)
	}
	return ends[0]
}

// nothing checks no request was recorded. Begin comes before a request is
// forwarded, so once the client has an answer, no Begin means none at all.
func (r *recorder) nothing(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.begins) != 0 || len(r.ends) != 0 {
		t.Errorf("recorded begins %v and %d ends, want none", r.begins, len(r.ends))
	}
}

// tick is a clock that moves one millisecond at every reading.
type tick struct{ n atomic.Int64 }

func (c *tick) now() time.Time {
	return time.Unix(1700000000, 0).Add(time.Duration(c.n.Add(1)) * time.Millisecond)
}

// rig is a proxy in front of an upstream, both on loopback listeners.
type rig struct {
	upstream *httptest.Server
	seen     chan http.Header // request headers the upstream got (the first 100 unread)
	wrote    chan struct{}    // a metered request reached the upstream whole (the first 100 unread)
	proxy    *Proxy
	front    *httptest.Server
	rec      *recorder
	logs     *testlog.Buffer
	client   *http.Client
}

// newRig serves upstream behind a proxy configured by opts (Name, Target,
// Devices, TenantSecret, Now and Logger are filled in where empty).
func newRig(t *testing.T, upstream http.Handler, opts Options) *rig {
	t.Helper()
	g := &rig{seen: make(chan http.Header, 100), wrote: make(chan struct{}, 100), rec: newRecorder(), logs: &testlog.Buffer{}}
	opts.wrote = func() {
		select {
		case g.wrote <- struct{}{}:
		default:
		}
	}
	g.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case g.seen <- r.Header.Clone():
		default: // a test of many requests reads none of them
		}
		upstream.ServeHTTP(w, r)
	}))
	t.Cleanup(g.upstream.Close)
	opts.Name = cmp.Or(opts.Name, upstreamName)
	opts.Target = cmp.Or(opts.Target, g.upstream.URL)
	if opts.Devices == nil {
		opts.Devices = []string{"0", "1"}
	}
	if opts.TenantSecret == nil {
		opts.TenantSecret = testSecret
	}
	if opts.Now == nil {
		opts.Now = (&tick{}).now
	}
	opts.Logger = slog.New(slog.NewTextHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(opts, g.rec)
	if err != nil {
		t.Fatal(err)
	}
	g.proxy = p
	g.front = httptest.NewServer(p)
	t.Cleanup(g.front.Close)
	t.Cleanup(p.CloseIdleConnections)
	g.client = &http.Client{Transport: &http.Transport{}}
	t.Cleanup(g.client.CloseIdleConnections)
	return g
}

// send makes one request to base and reads the whole answer.
func send(t *testing.T, c *http.Client, base string, q query) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), q.method, base+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range q.header {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return res, body
}

type query struct {
	method, path, body string
	header             map[string]string
}

// TestProxyIsTransparent compares a call through the proxy with the same
// call straight to an identical fake: the client must not see a
// difference, and the span must say what the fake sent.
func TestProxyIsTransparent(t *testing.T) {
	const (
		chatBody   = `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello world!"}]}`
		streamBody = `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":7,"reasoning_effort":"low","messages":[{"role":"user","content":"hello world!"}]}`
		bareStream = `{"model":"m","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"no usage please"}]}`
		textBody   = `{"model":"m","max_tokens":3,"prompt":"once upon a time"}`
		textStream = `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"prompt":"once upon a time"}`
	)
	tests := []struct {
		name       string
		q          query
		metered    bool
		wantStatus int
		stream     bool
	}{
		{"chat", query{"POST", "/v1/chat/completions", chatBody, nil}, true, 200, false},
		{"chat streamed with usage", query{"POST", "/v1/chat/completions", streamBody, nil}, true, 200, true},
		{"chat streamed without usage", query{"POST", "/v1/chat/completions", bareStream, nil}, true, 200, true},
		{"completion", query{"POST", "/v1/completions", textBody, nil}, true, 200, false},
		{"completion streamed", query{"POST", "/v1/completions", textStream, nil}, true, 200, true},
		{"refused by the upstream", query{"POST", "/v1/chat/completions", `{"model":"m"}`, nil}, true, 400, false},
		{"broken JSON", query{"POST", "/v1/completions", `{"model":`, nil}, true, 400, false},
		{"client headers and id", query{"POST", "/v1/chat/completions", chatBody, map[string]string{
			"X-Request-Id": "client-id-42", "X-Forwarded-For": "10.1.2.3", "X-Custom": "kept"}}, true, 200, false},
		{"models", query{"GET", "/v1/models", "", nil}, false, 200, false},
		{"models with a query", query{"GET", "/v1/models?limit=3&x=%20y", "", nil}, false, 200, false},
		{"health", query{"GET", "/health", "", nil}, false, 200, false},
		{"unknown path", query{"POST", "/v2/else", `{"model":"m"}`, nil}, false, 404, false},
		{"metered path, other method", query{"GET", "/v1/chat/completions", "", nil}, false, 405, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := fakeupstream.New(fakeupstream.Options{})
			g := newRig(t, fake, Options{})
			direct := httptest.NewServer(fakeupstream.New(fakeupstream.Options{}))
			defer direct.Close()
			dc := &http.Client{Transport: &http.Transport{}}
			defer dc.CloseIdleConnections()

			wantRes, wantBody := send(t, dc, direct.URL, tt.q)
			res, body := send(t, g.client, g.front.URL, tt.q)

			if res.StatusCode != tt.wantStatus || wantRes.StatusCode != tt.wantStatus {
				t.Errorf("status = %d through the proxy, %d direct, want %d", res.StatusCode, wantRes.StatusCode, tt.wantStatus)
			}
			if !bytes.Equal(body, wantBody) {
				t.Errorf("body through the proxy differs from the direct one:\n got %q\nwant %q", body, wantBody)
			}
			if got, want := headersBut(res.Header), headersBut(wantRes.Header); !equalHeaders(got, want) {
				t.Errorf("headers through the proxy = %v, want %v", got, want)
			}
			ids := res.Header.Values("X-Request-Id")
			if len(ids) != 1 {
				t.Fatalf("X-Request-Id = %q, want one value", ids)
			}
			if want := tt.q.header["X-Request-Id"]; want != "" && ids[0] != want {
				t.Errorf("X-Request-Id = %q, want the client's %q", ids[0], want)
			}
			upstreamSaw := <-g.seen
			if got := upstreamSaw.Get("X-Request-Id"); got != ids[0] {
				t.Errorf("upstream saw X-Request-Id %q, client got %q", got, ids[0])
			}
			for k, v := range tt.q.header {
				if got := upstreamSaw.Get(k); got != v {
					t.Errorf("upstream saw %s = %q, want %q", k, got, v)
				}
			}
			if !tt.metered {
				g.rec.nothing(t)
				return
			}

			s := g.rec.span(t)
			sent := fake.Sent()["m"]
			want := estimator.Span{
				ID: ids[0], Upstream: upstreamName, Model: "m", Status: strconv.Itoa(tt.wantStatus),
				PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
				UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: tt.wantStatus < 400,
			}
			if tt.q.body == `{"model":` {
				want.Model = ""
			}
			if sent.UsageReported == 1 {
				want.PromptTokens, want.CompletionTokens = sent.PromptTokens, sent.CompletionTokens
				want.CachedTokens, want.ReasoningTokens = sent.CachedTokens, sent.ReasoningTokens
				want.UsageSource = estimator.UsageReported
			}
			checkSpan(t, s, want)
			if tt.stream && !(s.Start.Before(s.FirstToken) && s.FirstToken.Before(s.End)) {
				t.Errorf("times start %v, first token %v, end %v: want them in this order", s.Start, s.FirstToken, s.End)
			}
			if !tt.stream && !s.FirstToken.IsZero() {
				t.Errorf("FirstToken = %v for a non-streamed answer, want zero", s.FirstToken)
			}
		})
	}
}

// checkSpan compares the fields of a span that do not depend on time.
func checkSpan(t *testing.T, got, want estimator.Span) {
	t.Helper()
	g, w := got, want
	g.Start, g.FirstToken, g.End = time.Time{}, time.Time{}, time.Time{}
	w.Start, w.FirstToken, w.End = time.Time{}, time.Time{}, time.Time{}
	if want.ID == "" {
		g.ID = ""
	}
	if want.Key == "" {
		g.Key = "" // unique, tested by TestSameClientIDTwice
	}
	if want.TraceID == "" {
		g.TraceID = "" // random, tested by TestTraceparent
	}
	if !equalSpans(g, w) {
		t.Errorf("span =\n%+v\nwant\n%+v", g, w)
	}
	if !got.Start.Before(got.End) {
		t.Errorf("span start %v is not before its end %v", got.Start, got.End)
	}
}

func equalSpans(a, b estimator.Span) bool { return reflect.DeepEqual(a, b) }

// headersBut drops the headers that legitimately differ between a direct and
// a proxied answer.
func headersBut(h http.Header) http.Header {
	h = h.Clone()
	h.Del("Date")
	h.Del("X-Request-Id")
	return h
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestStreamIsNotBuffered holds the upstream after its first token: the
// client must get the events so far while the upstream is still
// generating. Then the client leaves, and the span says so.
func TestStreamIsNotBuffered(t *testing.T) {
	fake := fakeupstream.New(fakeupstream.Options{TokenDelay: time.Hour})
	g := newRig(t, fake, Options{})
	// A proxy that held the body back would block the first read for the
	// upstream's hour: the deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"messages":[{"content":"hi"}]}`
	req, _ := http.NewRequestWithContext(ctx, "POST", g.front.URL+"/v1/chat/completions", strings.NewReader(body))
	res, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	for _, want := range []string{`"role":"assistant"`, `"content":" `} {
		line, err := r.ReadString('\n')
		if err != nil || !strings.Contains(line, want) {
			t.Fatalf("event %q (err %v): want one with %s", line, err, want)
		}
		if blank, err := r.ReadString('\n'); blank != "\n" || err != nil {
			t.Fatalf("after an event: %q, %v; want a blank line", blank, err)
		}
	}
	if g.rec.endCount() != 0 {
		t.Fatal("End came while the upstream was still generating")
	}
	cancel()

	// No usage came: the tokens are counted from the stream so far (one),
	// the prompt estimated from its text ("hi": one token).
	s := g.rec.span(t)
	checkSpan(t, s, estimator.Span{
		Upstream: upstreamName, Model: "m", Status: estimator.StatusClientClosed,
		PromptTokens: 1, CompletionTokens: 1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageEstimated, Devices: []string{"0", "1"}, Served: true,
	})
	if s.FirstToken.IsZero() {
		t.Error("FirstToken is zero, want the time of the first content event")
	}
}

// TestClientLeavesBeforeAnswer: a non-streamed request the client gives up
// on while the upstream still works is client_closed, and was served.
func TestClientLeavesBeforeAnswer(t *testing.T) {
	g := newRig(t, fakeupstream.New(fakeupstream.Options{TokenDelay: time.Hour}), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	body := `{"model":"m","max_tokens":5,"messages":[{"content":"hi"}]}`
	req, _ := http.NewRequestWithContext(ctx, "POST", g.front.URL+"/v1/chat/completions", strings.NewReader(body))
	errc := make(chan error, 1)
	go func() {
		res, err := g.client.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	// The upstream has the request, and the proxy knows it was written
	// whole (it learns so on its transport's writer goroutine).
	<-g.wrote
	cancel()
	if err := <-errc; err == nil {
		t.Error("client got an answer, want its request canceled")
	}
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Model: "m", Status: estimator.StatusClientClosed,
		PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: true,
	})
}

// TestUpstreamFailures: no upstream answer means a proxy error, and a span
// that says whether the upstream ever had the request.
func TestUpstreamFailures(t *testing.T) {
	down := downTarget(t)

	slow := fakeupstream.New(fakeupstream.Options{TokenDelay: time.Hour})
	body := `{"model":"m","max_tokens":2,"messages":[{"content":"hi"}]}`
	tests := []struct {
		name       string
		opts       Options
		q          query
		metered    bool
		wantStatus int
		wantServed bool
		wantMsg    string
	}{
		{"down", Options{Target: down}, query{"POST", "/v1/chat/completions", body, nil}, true, 502, false, "unreachable"},
		{"down, unmetered path", Options{Target: down}, query{"GET", "/v1/models", "", nil}, false, 502, false, "unreachable"},
		{"no headers in time", Options{HeaderTimeout: 50 * time.Millisecond}, query{"POST", "/v1/chat/completions", body, nil}, true, 504, true,
			"sent no response headers within 50ms (response_header_timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t, slow, tt.opts)
			res, got := send(t, g.client, g.front.URL, tt.q)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			var e struct{ Error struct{ Message string } }
			if err := json.Unmarshal(got, &e); err != nil || !strings.Contains(e.Error.Message, upstreamName) || !strings.Contains(e.Error.Message, tt.wantMsg) {
				t.Errorf("body %q: want an error object naming the upstream and saying %q", got, tt.wantMsg)
			}
			id := res.Header.Get("X-Request-Id")
			if len(id) != 32 {
				t.Errorf("X-Request-Id = %q, want a generated one", id)
			}
			if !tt.metered {
				g.rec.nothing(t)
				return
			}
			checkSpan(t, g.rec.span(t), estimator.Span{
				ID: id, Upstream: upstreamName, Model: "m", Status: strconv.Itoa(tt.wantStatus),
				PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
				UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: tt.wantServed,
			})
		})
	}
}

// TestUpstreamCutsStream: the upstream dies mid-stream after reporting
// cumulative usage. The span says upstream_error and flags the usage as
// partial.
func TestUpstreamCutsStream(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n")
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	g := newRig(t, upstream, Options{})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", g.front.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true}`))
	res, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Errorf("client read the cut stream to a clean end (%q), want an error", got)
	}
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Model: "m", Status: estimator.StatusUpstreamError,
		PromptTokens: 9, CompletionTokens: 2, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageReportedPartial, Devices: []string{"0", "1"}, Served: true,
	})
	if !strings.Contains(g.logs.String(), "cut short") {
		t.Errorf("logs %q: want a warning about the cut", g.logs)
	}
}

// TestLargeAnswer: a non-streamed answer much larger than what the watcher
// keeps still passes whole, and its usage is found in its tail.
func TestLargeAnswer(t *testing.T) {
	text := strings.Repeat(`lorem \"usage\": {\"prompt_tokens\": 1} `, 100_000) // ~4 MB
	answer := `{"id":"x","choices":[{"message":{"content":"` + text + `"}}],"usage":{"prompt_tokens":12,"completion_tokens":345678}}`
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	g := newRig(t, upstream, Options{MaxUsageBytes: 4096})
	res, got := send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", `{"model":"big"}`, nil})
	if res.StatusCode != 200 || string(got) != answer {
		t.Errorf("status %d, %d bytes: want 200 and the %d bytes sent", res.StatusCode, len(got), len(answer))
	}
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Model: "big", Status: "200",
		PromptTokens: 12, CompletionTokens: 345678, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageReported, Devices: []string{"0", "1"}, Served: true,
	})
}

func TestBodyLimit(t *testing.T) {
	const limit = 64
	small := `{"model":"m","max_tokens":1,"prompt":"x"}`
	large := `{"model":"m","prompt":"` + strings.Repeat("x", limit) + `"}`
	tests := []struct {
		name       string
		body       io.Reader
		wantStatus int
	}{
		{"under the cap", strings.NewReader(small), 200},
		{"exactly the cap", strings.NewReader(small + strings.Repeat(" ", limit-len(small))), 200},
		{"over the cap, length known", strings.NewReader(large), 413},
		{"over the cap, chunked", io.MultiReader(strings.NewReader(large)), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := fakeupstream.New(fakeupstream.Options{})
			g := newRig(t, fake, Options{MaxRequestBytes: limit})
			req, _ := http.NewRequestWithContext(t.Context(), "POST", g.front.URL+"/v1/completions", tt.body)
			res, err := g.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (%s)", res.StatusCode, tt.wantStatus, got)
			}
			if tt.wantStatus == 200 {
				s := g.rec.span(t)
				if s.Status != "200" || !s.Served || s.PromptTokens != fake.Sent()["m"].PromptTokens {
					t.Errorf("span %+v: want status 200, served, the fake's tokens", s)
				}
				return
			}
			s := g.rec.unbegun(t)
			if !strings.Contains(string(got), "limit of 64 bytes") {
				t.Errorf("body %q: want it to name the limit", got)
			}
			checkSpan(t, s, estimator.Span{
				ID: res.Header.Get("X-Request-Id"), Upstream: upstreamName, Status: "413",
				PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
				UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: false,
			})
			if n := len(g.seen); n != 0 {
				t.Errorf("upstream got %d requests, want none", n)
			}
		})
	}
}

// TestClientCutsUpload: a client that goes away in the middle of sending
// its body gets a client_closed span, and the upstream never sees it.
func TestClientCutsUpload(t *testing.T) {
	g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{})
	conn, err := net.Dial("tcp", g.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.WriteString(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\":")
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkSpan(t, g.rec.unbegun(t), estimator.Span{
		Upstream: upstreamName, Status: estimator.StatusClientClosed,
		PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageUnknown, Devices: []string{"0", "1"}, Served: false,
	})
	if n := len(g.seen); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
}

func TestRequestID(t *testing.T) {
	tests := []struct {
		name, client string
		keep         bool
	}{
		{"none", "", false},
		{"client's", "req-0001:a.b_c", true},
		{"a UUID", "9b2e4c1a-7f0d-4e55-9c1e-2a6b3d4f5e60", true},
		{"with a space", "two words", false},
		{"too long", strings.Repeat("a", 129), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{})
			h := map[string]string{}
			if tt.client != "" {
				h["X-Request-Id"] = tt.client
			}
			res, _ := send(t, g.client, g.front.URL, query{"POST", "/v1/completions", `{"model":"m","prompt":"x"}`, h})
			got := res.Header.Get("X-Request-Id")
			if tt.keep && got != tt.client {
				t.Errorf("X-Request-Id = %q, want the client's %q", got, tt.client)
			}
			if _, err := hex.DecodeString(got); !tt.keep && (len(got) != 32 || err != nil) {
				t.Errorf("X-Request-Id = %q, want 32 hex digits", got)
			}
			if up := (<-g.seen).Get("X-Request-Id"); up != got {
				t.Errorf("upstream saw %q, client got %q", up, got)
			}
			if s := g.rec.span(t); s.ID != got {
				t.Errorf("span ID = %q, client got %q", s.ID, got)
			}
		})
	}
}

func TestTenant(t *testing.T) {
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(apiKey))
	keyTenant := hex.EncodeToString(mac.Sum(nil))[:16]
	hashed := func(v string) string { return tenants{secret: testSecret}.hash(v) } // a header value (ident_test.go)
	tests := []struct {
		name, header string
		sent         map[string]string
		want         string
	}{
		{"bearer key", "", map[string]string{"Authorization": "Bearer " + apiKey}, keyTenant},
		{"scheme in lower case", "", map[string]string{"Authorization": "bearer " + apiKey}, keyTenant},
		{"no key", "", nil, ""},
		{"basic auth is no key", "", map[string]string{"Authorization": "Basic " + apiKey}, ""},
		{"header wins", "X-Tenant", map[string]string{"X-Tenant": "team-a", "Authorization": "Bearer " + apiKey}, hashed("team-a")},
		{"header absent: key", "X-Tenant", map[string]string{"Authorization": "Bearer " + apiKey}, keyTenant},
		{"header not a name: hashed", "X-Tenant", map[string]string{"X-Tenant": strings.Repeat("t", 65), "Authorization": "Bearer " + apiKey}, hashed(strings.Repeat("t", 65))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{TenantHeader: tt.header})
			res, _ := send(t, g.client, g.front.URL, query{"POST", "/v1/completions", `{"model":"m","prompt":"x"}`, tt.sent})
			if res.StatusCode != 200 {
				t.Fatalf("status = %d, want 200", res.StatusCode)
			}
			if auth := (<-g.seen).Get("Authorization"); auth != tt.sent["Authorization"] {
				t.Errorf("upstream saw Authorization %q, want it unchanged", auth)
			}
			s := g.rec.span(t)
			if s.Tenant != tt.want {
				t.Errorf("tenant = %q, want %q", s.Tenant, tt.want)
			}
			if spanText := fmtSpan(s); strings.Contains(spanText, apiKey) || strings.Contains(g.logs.String(), apiKey) {
				t.Error("the API key shows in the span or the logs")
			}
			if !strings.Contains(g.logs.String(), "request_id="+s.ID+" model=m stream=false status=200") {
				t.Errorf("logs %q: want a debug line for the request", g.logs)
			}
		})
	}
}

func fmtSpan(s estimator.Span) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestNewRefuses(t *testing.T) {
	good := Options{Name: "u", Target: "http://127.0.0.1:1", TenantSecret: testSecret}
	tests := []struct {
		name   string
		change func(*Options)
		rec    Recorder
	}{
		{"no name", func(o *Options) { o.Name = "" }, newRecorder()},
		{"no recorder", func(*Options) {}, nil},
		{"target not http", func(o *Options) { o.Target = "unix:///run/x.sock" }, newRecorder()},
		{"target without host", func(o *Options) { o.Target = "http://" }, newRecorder()},
		{"target unparsable", func(o *Options) { o.Target = "http://[::1" }, newRecorder()},
		{"short secret", func(o *Options) { o.TenantSecret = []byte("short") }, newRecorder()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.change(&o)
			if p, err := New(o, tt.rec); err == nil {
				p.CloseIdleConnections()
				t.Error("New accepted it, want an error")
			}
		})
	}
	p, err := New(good, newRecorder())
	if err != nil {
		t.Fatalf("New(%+v): %v", good, err)
	}
	p.CloseIdleConnections()
}

// TestCompressed: a gzip answer passes to the client as the upstream
// encoded it and is watched through a decoder on the side. A stream the
// proxy adds include_usage to is asked for unencoded, and comes so.
func TestCompressed(t *testing.T) {
	const (
		whole  = `{"model":"m","max_tokens":3,"messages":[{"content":"compress me please"}]}`
		asked  = `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"messages":[{"content":"compress me"}]}`
		edited = `{"model":"m","stream":true,"max_tokens":3,"messages":[{"content":"compress me"}]}`
	)
	gz := map[string]string{"Accept-Encoding": "gzip"}
	for _, tt := range []struct {
		name, body, wantCoding string
	}{
		{"whole", whole, "gzip"},
		{"stream that asked for usage", asked, "gzip"},
		{"stream given include_usage", edited, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := fakeupstream.New(fakeupstream.Options{Gzip: true})
			g := newRig(t, fake, Options{})
			direct := httptest.NewServer(fakeupstream.New(fakeupstream.Options{Gzip: true}))
			defer direct.Close()
			dc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer dc.CloseIdleConnections()
			g.client.Transport.(*http.Transport).DisableCompression = true

			res, got := send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", tt.body, gz})
			if ce := res.Header.Get("Content-Encoding"); ce != tt.wantCoding {
				t.Fatalf("Content-Encoding %q, want %q", ce, tt.wantCoding)
			}
			if tt.wantCoding != "" {
				_, want := send(t, dc, direct.URL, query{"POST", "/v1/chat/completions", tt.body, gz})
				if !bytes.Equal(got, want) {
					t.Errorf("compressed bytes through the proxy differ from the direct ones")
				}
			} else {
				_, want := send(t, dc, direct.URL, query{"POST", "/v1/chat/completions", tt.body, nil})
				if !bytes.Equal(got, want) {
					t.Errorf("got %q\nwant %q", got, want)
				}
			}
			if up := (<-g.seen).Get("Accept-Encoding"); (tt.wantCoding == "") != (up == "identity") {
				t.Errorf("upstream saw Accept-Encoding %q", up)
			}
			s := g.rec.span(t)
			sent := fake.Sent()["m"]
			if s.UsageSource != estimator.UsageReported || s.PromptTokens != sent.PromptTokens || s.CompletionTokens != sent.CompletionTokens {
				t.Errorf("span %+v: want the fake's counts %+v, reported", s, sent)
			}
		})
	}
}

// TestNoIncludeUsage: with include_usage off, a stream that did not ask for
// usage goes to the upstream as sent, and is counted from its events.
func TestNoIncludeUsage(t *testing.T) {
	var got []byte
	fake := fakeupstream.New(fakeupstream.Options{})
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(got))
		fake.ServeHTTP(w, r)
	}), Options{NoIncludeUsage: true})
	body := `{"model":"m","stream":true,"max_tokens":3,"messages":[{"content":"abcdefgh"}]}`
	res, _ := send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", body, nil})
	if res.StatusCode != 200 || string(got) != body {
		t.Errorf("%d; upstream got %s, want the body as sent", res.StatusCode, got)
	}
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Model: "m", Status: "200",
		PromptTokens: 2, CompletionTokens: 3, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageEstimated, Devices: []string{"0", "1"}, Served: true,
	})
}

// TestSameClientIDTwice: two live requests with the same X-Request-Id are
// two requests: two spans that keep the client's id, with keys of their own
// (the ledger keys live requests by Key, so neither is merged into the other).
func TestSameClientIDTwice(t *testing.T) {
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	up := fakeupstream.New(fakeupstream.Options{})
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release // both are in flight at once
		up.ServeHTTP(w, r)
	}), Options{})
	q := query{"POST", "/v1/chat/completions", `{"model":"m","messages":[{"content":"hi"}]}`,
		map[string]string{"X-Request-Id": "same-id"}}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), q.method, g.front.URL+q.path, strings.NewReader(q.body))
			req.Header.Set("X-Request-Id", "same-id")
			res, err := g.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if got := res.Header.Get("X-Request-Id"); got != "same-id" {
				t.Errorf("client sees request id %q, want same-id", got)
			}
		})
	}
	<-arrived
	<-arrived
	close(release)
	wg.Wait()
	spans := g.rec.wait(t, 2)
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	for _, s := range spans {
		if s.ID != "same-id" || s.Status != "200" {
			t.Errorf("span id %q status %q, want same-id 200", s.ID, s.Status)
		}
	}
	if spans[0].Key == "" || spans[0].Key == spans[1].Key {
		t.Errorf("span keys %q and %q, want two different ones", spans[0].Key, spans[1].Key)
	}
	g.rec.mu.Lock()
	defer g.rec.mu.Unlock()
	if len(g.rec.begins) != 2 || g.rec.begins[spans[0].Key] != 1 || g.rec.begins[spans[1].Key] != 1 {
		t.Errorf("begins %v, want one for each span's key", g.rec.begins)
	}
}

// TestHostPassesUnchanged: behind an http target on an IP literal (the
// default of preserve_host), the upstream sees the client's Host, not the
// target's, metered or not.
func TestHostPassesUnchanged(t *testing.T) {
	hosts := make(chan string, 2)
	up := fakeupstream.New(fakeupstream.Options{})
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		up.ServeHTTP(w, r)
	}), Options{})
	for _, q := range []query{
		{"POST", "/v1/chat/completions", `{"model":"m","messages":[{"content":"hi"}]}`, nil},
		{"GET", "/v1/models", "", nil},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), q.method, g.front.URL+q.path, strings.NewReader(q.body))
		req.Host = "llm.example.test:8443"
		res, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got := <-hosts; got != "llm.example.test:8443" {
			t.Errorf("%s %s: upstream saw Host %q, want the client's llm.example.test:8443", q.method, q.path, got)
		}
	}
}

// downTarget is the URL of an upstream that is down: a loopback port bound
// for the test but not listening, so connecting is refused, and no other
// server can take the port while the test runs (as one could after a
// listener was closed).
func downTarget(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return "http://127.0.0.1:" + strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
}

// TestUpstreamDownLogsOnce: 100 requests to an upstream that drops every
// connection log one warning, not 100; the first answer after them (past
// the quiet period, a millisecond here) logs one info line with the count
// (every request is still at debug).
func TestUpstreamDownLogsOnce(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	up := fakeupstream.New(fakeupstream.Options{})
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close() // no response at all: the proxy answers 502
			}
			return
		}
		up.ServeHTTP(w, r)
	}), Options{quiet: time.Millisecond})
	q := query{"POST", "/v1/chat/completions", `{"model":"m","messages":[{"content":"hi"}]}`, nil}
	for range 100 {
		if res, _ := send(t, g.client, g.front.URL, q); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", res.StatusCode)
		}
	}
	down.Store(false)
	for range 3 {
		if res, _ := send(t, g.client, g.front.URL, q); res.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", res.StatusCode)
		}
	}
	g.rec.wait(t, 103)
	logs := g.logs.String()
	warns, infos := strings.Count(logs, "level=WARN"), strings.Count(logs, "level=INFO")
	if warns != 1 || infos != 1 || !strings.Contains(logs, "failed_requests=100") {
		t.Errorf("%d warnings and %d info lines (want 1 and 1, the latter with failed_requests=100):\n%s", warns, infos, logs)
	}
	if n := strings.Count(logs, `msg="upstream unreachable or sent no response headers"`); n != 99 {
		t.Errorf("%d debug lines for the failures after the first, want 99", n)
	}
}
