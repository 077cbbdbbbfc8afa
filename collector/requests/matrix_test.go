package requests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// A dialect case of the matrix: one path, streamed or not.
type dialectCase struct {
	name, path string
	stream     bool
	model      string // as the record names it
	body       func(prompt string, n int) string
	// frames is how many frames (SSE events, NDJSON lines) precede the
	// first k tokens' end in a stream.
	frames func(k int) int
	// text reads the generated text out of a whole answer.
	text func(body []byte) string
	// cached is the cached count the dialect reports (-1: none).
	cached func(prompt int64) int64
	// reasoning is the reasoning count it reports (-1: none).
	reasoning int64
	embed     bool
	// headers: the dialect reports counts in headers (TGI /generate).
	headers bool
	// cumulative: in UsageCumulative, its stream carries counts on every chunk.
	cumulative bool
	// partialPrompt: in UsageCumulative, the prompt count is left out (Ollama).
	partialPrompt bool
	// wholeCached: its whole answers report cached only via the usage (OpenAI),
	// not the cumulative chunks.
	cumCached bool
}

func jsonStr(s string) string { b, _ := json.Marshal(s); return string(b) }

func field(path ...string) func([]byte) string {
	return func(body []byte) string {
		var v any
		if json.Unmarshal(body, &v) != nil {
			return ""
		}
		for _, p := range path {
			switch x := v.(type) {
			case map[string]any:
				v = x[p]
			case []any:
				if len(x) == 0 {
					return ""
				}
				v = x[0]
			}
		}
		s, _ := v.(string)
		return s
	}
}

func half(p int64) int64 { return p / 2 }
func none(int64) int64   { return -1 }

func matrixDialects() []dialectCase {
	var out []dialectCase
	for _, stream := range []bool{false, true} {
		st := fmt.Sprint(stream)
		out = append(out,
			dialectCase{
				name: "openai-chat", path: "/v1/chat/completions", stream: stream, model: "m",
				body: func(p string, n int) string {
					return `{"model":"m","stream":` + st + `,"max_tokens":` + fmt.Sprint(n) + `,"messages":[{"role":"user","content":` + jsonStr(p) + `}]}`
				},
				frames: func(k int) int { return k + 1 }, text: field("choices", "0", "message", "content"),
				cached: half, reasoning: 0, cumulative: true, cumCached: true,
			},
			dialectCase{
				name: "openai-completions", path: "/v1/completions", stream: stream, model: "m",
				body: func(p string, n int) string {
					return `{"model":"m","stream":` + st + `,"max_tokens":` + fmt.Sprint(n) + `,"prompt":` + jsonStr(p) + `}`
				},
				frames: func(k int) int { return k }, text: field("choices", "0", "text"),
				cached: half, reasoning: 0, cumulative: true, cumCached: true,
			},
			dialectCase{
				name: "ollama-chat", path: "/api/chat", stream: stream, model: "m",
				body: func(p string, n int) string {
					return `{"model":"m","stream":` + st + `,"options":{"num_predict":` + fmt.Sprint(n) + `},"messages":[{"role":"user","content":` + jsonStr(p) + `}]}`
				},
				frames: func(k int) int { return k }, text: field("message", "content"),
				cached: none, reasoning: -1, partialPrompt: true,
			},
			dialectCase{
				name: "ollama-generate", path: "/api/generate", stream: stream, model: "m",
				body: func(p string, n int) string {
					return `{"model":"m","stream":` + st + `,"options":{"num_predict":` + fmt.Sprint(n) + `},"prompt":` + jsonStr(p) + `}`
				},
				frames: func(k int) int { return k }, text: field("response"),
				cached: none, reasoning: -1, partialPrompt: true,
			},
			dialectCase{
				name: "llamacpp", path: "/completion", stream: stream,
				body: func(p string, n int) string {
					return `{"stream":` + st + `,"n_predict":` + fmt.Sprint(n) + `,"prompt":` + jsonStr(p) + `}`
				},
				frames: func(k int) int { return k }, text: field("content"),
				cached: half, reasoning: -1, cumulative: true,
			},
		)
	}
	tgi := func(p string, n int) string {
		return `{"inputs":` + jsonStr(p) + `,"parameters":{"max_new_tokens":` + fmt.Sprint(n) + `,"details":true}}`
	}
	out = append(out,
		dialectCase{name: "openai-embeddings", path: "/v1/embeddings", model: "m",
			body: func(p string, n int) string { return `{"model":"m","input":` + jsonStr(p) + `}` },
			text: func([]byte) string { return "" }, cached: none, reasoning: -1, embed: true},
		dialectCase{name: "tgi-generate", path: "/generate", body: tgi, text: field("generated_text"),
			cached: none, reasoning: -1, headers: true},
		dialectCase{name: "tgi-generate_stream", path: "/generate_stream", stream: true, body: tgi,
			frames: func(k int) int { return k }, text: func([]byte) string { return "" }, cached: none, reasoning: -1},
	)
	return out
}

// matrixKey is the API key of every matrix request: it must never show.
const matrixKey = "sk-matrix-9c1f44e0b7d2a6"

// privacy collects what the matrix wrote and what it must not contain.
type privacy struct {
	logs    []string // every case's log text (at debug: a line a request)
	records []string // every case's span, formatted
	secrets []string // prompts, completions, keys
}

// leaks is the secrets that appear in text.
func (pv *privacy) leaks(text string) []string {
	var out []string
	for _, s := range pv.secrets {
		if strings.Contains(text, s) {
			out = append(out, s)
		}
	}
	return out
}

func (pv *privacy) secret(s string) {
	if len(s) >= 10 {
		pv.secrets = append(pv.secrets, s)
	}
}

// TestMatrix: every dialect x streamed or not x usage reported, absent or
// cumulative x completed, client gone, upstream cut, error inside a 200,
// upstream down. The client's bytes are identical to a direct call (a
// prefix of it where the answer was cut), and the record's status and
// tokens are right. Everything logged and recorded is then searched for
// the prompts, completions and keys used: none may appear.
func TestMatrix(t *testing.T) {
	const n, k = 5, 2 // tokens asked for; tokens before a failure
	pv := &privacy{secrets: []string{matrixKey}}
	modes := map[string]fakeupstream.UsageMode{
		"reported": fakeupstream.UsageReported, "absent": fakeupstream.UsageOmitted, "cumulative": fakeupstream.UsageCumulative,
	}
	outcomes := []string{"ok", "client-gone", "upstream-cut", "error-in-200", "upstream-down"}
	for _, dc := range matrixDialects() {
		for modeName, mode := range modes {
			for _, outcome := range outcomes {
				if outcome == "error-in-200" && !dc.stream {
					continue // an error inside a whole answer is just an error answer
				}
				name := fmt.Sprintf("%s/stream=%v/%s/%s", dc.name, dc.stream, modeName, outcome)
				t.Run(name, func(t *testing.T) {
					prompt := "PRIVATE-PROMPT " + name + ": the quick brown fox jumps over"
					pv.secret(prompt)
					runCase(t, pv, dc, mode, outcome, prompt, n, k)
				})
			}
		}
	}
	// The search must see what was written: a log line and a record for
	// every case, and a planted secret in them must be found.
	if len(pv.logs) == 0 || len(pv.logs) != len(pv.records) {
		t.Fatalf("%d cases' logs and %d records to search, want one of each per case", len(pv.logs), len(pv.records))
	}
	for i := range pv.logs {
		if !strings.Contains(pv.logs[i], `msg=request `) || pv.records[i] == "" {
			t.Fatalf("case %d: its request's log line or record is missing from what is searched:\n%s\n%s", i, pv.logs[i], pv.records[i])
		}
	}
	canary := privacy{secrets: append(slices.Clone(pv.secrets), "PLANTED-MODEL-SECRET-51d0")}
	canaryCase(t, &canary)
	if got := canary.leaks(strings.Join(canary.logs, "\n")); !slices.Contains(got, "PLANTED-MODEL-SECRET-51d0") {
		t.Fatalf("a secret planted in the logs (as a model name) is not found by the search: %q", got)
	}
	if got := canary.leaks(strings.Join(canary.records, "\n")); !slices.Contains(got, "PLANTED-MODEL-SECRET-51d0") {
		t.Fatalf("a secret planted in a record (as a model name) is not found by the search: %q", got)
	}
	if !slices.Contains(pv.secrets, matrixKey) || len(pv.secrets) < len(pv.logs)+1 {
		t.Fatalf("%d secrets searched for (the key among them: %v), want the key and each case's prompt",
			len(pv.secrets), slices.Contains(pv.secrets, matrixKey))
	}
	if got := pv.leaks(strings.Join(pv.logs, "\n")); len(got) > 0 {
		t.Errorf("in the logs: %q", got)
	}
	if got := pv.leaks(strings.Join(pv.records, "\n")); len(got) > 0 {
		t.Errorf("in the records: %q", got)
	}
}

// canaryCase sends one request whose model is the planted secret, which
// the proxy logs and records as it must, and collects what it wrote.
func canaryCase(t *testing.T, pv *privacy) {
	g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{})
	send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", `{"model":"PLANTED-MODEL-SECRET-51d0","messages":[{"content":"hi"}]}`, nil})
	pv.records = append(pv.records, fmtSpan(g.rec.span(t)))
	pv.logs = append(pv.logs, g.logs.String())
}

func runCase(t *testing.T, pv *privacy, dc dialectCase, mode fakeupstream.UsageMode, outcome, prompt string, n, k int) {
	opts := fakeupstream.Options{Usage: mode, FailAfter: k}
	switch outcome {
	case "client-gone":
		opts.Fail = fakeupstream.FailStall
	case "upstream-cut":
		opts.Fail = fakeupstream.FailCut
	case "error-in-200":
		opts.Fail = fakeupstream.FailErrorEvent
	}
	proxyOpts := Options{}
	if outcome == "upstream-down" {
		proxyOpts.Target = downTarget(t)
	}
	g := newRig(t, fakeupstream.New(opts), proxyOpts)
	t.Cleanup(func() { pv.logs = append(pv.logs, g.logs.String()) })
	body := dc.body(prompt, n)
	hdr := map[string]string{"Authorization": "Bearer " + matrixKey, "Content-Type": "application/json"}

	// The direct answer of an identical fake that does not fail.
	directOpts := opts
	if outcome != "error-in-200" {
		directOpts.Fail = fakeupstream.FailNone
	}
	direct := httptest.NewServer(fakeupstream.New(directOpts))
	defer direct.Close()
	dc2 := &http.Client{Transport: &http.Transport{}}
	defer dc2.CloseIdleConnections()
	wantRes, want := send(t, dc2, direct.URL, query{"POST", dc.path, body, hdr})
	if wantRes.StatusCode != 200 {
		t.Fatalf("direct call: %d %s", wantRes.StatusCode, want)
	}
	if txt := dc.text(want); txt != "" {
		pv.secret(txt)
	}
	for _, ev := range bytes.Split(want, []byte("\n")) {
		pv.secret(tokenText(ev))
	}

	got, status, readErr := callProxy(t, g, dc, body, hdr, outcome, k)
	s := g.rec.span(t)
	pv.records = append(pv.records, fmtSpan(s))

	// What the client got.
	switch outcome {
	case "ok", "error-in-200":
		if status != 200 || !bytes.Equal(got, want) || readErr != nil {
			t.Errorf("through the proxy %d (%v)\n%q\ndirect\n%q", status, readErr, got, want)
		}
	case "client-gone", "upstream-cut":
		if !bytes.HasPrefix(want, got) {
			t.Errorf("through the proxy %d: %q\nis not a prefix of the direct answer\n%q", status, got, want)
		}
		if outcome == "upstream-cut" && readErr == nil {
			t.Errorf("the client read a cut answer to a clean end")
		}
	case "upstream-down":
		if status != 502 {
			t.Errorf("status %d, want 502", status)
		}
	}

	// The record.
	w := expectSpan(dc, mode, outcome, prompt, n, k, dc.text(want))
	w.Upstream, w.Model, w.Devices = upstreamName, dc.model, []string{"0", "1"}
	w.Tenant = s.Tenant
	checkSpan(t, s, w)
	if s.Tenant == "" {
		t.Error("no tenant from the API key")
	}
	streamedTokens := dc.stream && outcome != "upstream-down"
	if streamedTokens != !s.FirstToken.IsZero() {
		t.Errorf("FirstToken %v for a streamed=%v answer", s.FirstToken, dc.stream)
	}
}

// tokenText is the generated text in one line of a stream, if any.
func tokenText(line []byte) string {
	line = bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
	var v struct {
		Response string `json:"response"`
		Content  string `json:"content"`
		Message  struct{ Content string }
	}
	if json.Unmarshal(line, &v) != nil {
		return ""
	}
	return v.Response + v.Content + v.Message.Content
}

// callProxy makes the matrix request through the proxy, as the outcome
// needs: read to the end, or go away after the frames of k tokens.
func callProxy(t *testing.T, g *rig, dc dialectCase, body string, hdr map[string]string, outcome string, k int) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", g.front.URL+dc.path, strings.NewReader(body))
	for h, v := range hdr {
		req.Header.Set(h, v)
	}
	if outcome == "client-gone" && !dc.stream {
		// The upstream stalls before its headers: leave once it has the request.
		go func() {
			// Leave once the proxy knows the request reached the upstream
			// whole (it learns so on its transport's writer goroutine).
			select {
			case <-g.wrote:
			case <-ctx.Done():
			}
			cancel()
		}()
		res, err := g.client.Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatal("got an answer from a stalled upstream")
		}
		return nil, 0, err
	}
	res, err := g.client.Do(req)
	if err != nil && outcome == "upstream-cut" && !dc.stream {
		// A whole answer goes out in one write: cut before it, the client
		// gets no headers at all.
		return nil, 0, err
	}
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if outcome != "client-gone" {
		got, err := io.ReadAll(res.Body)
		return got, res.StatusCode, err
	}
	sep := []byte("\n\n")
	if !strings.HasPrefix(dc.path, "/generate") && dc.path != "/completion" && !strings.HasPrefix(dc.path, "/v1/") {
		sep = []byte("\n") // NDJSON
	}
	var got []byte
	buf := make([]byte, 4096)
	for bytes.Count(got, sep) < dc.frames(k) {
		m, err := res.Body.Read(buf)
		got = append(got, buf[:m]...)
		if err != nil {
			t.Fatalf("stream ended after %q: %v", got, err)
		}
	}
	cancel()
	return got, res.StatusCode, nil
}

// expectSpan is the record the matrix expects, but for the fields set by
// the caller.
func expectSpan(dc dialectCase, mode fakeupstream.UsageMode, outcome, prompt string, n, k int, text string) estimator.Span {
	s := estimator.Span{Status: "200", Served: true, PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1,
		ReasoningTokens: -1, UsageSource: estimator.UsageUnknown}
	msgs := int64(0)
	if strings.Contains(dc.name, "chat") {
		msgs = 1
	}
	pt := int64(len(prompt))
	P := max(1, (pt+3)/4+3*msgs) // the fake's count
	estP := (pt + 3) / 4         // the proxy's estimate
	N, K := int64(n), int64(k)
	reported := func(prompt, completion int64, whole bool) {
		s.UsageSource = estimator.UsageReported
		s.PromptTokens, s.CompletionTokens = prompt, completion
		s.CachedTokens, s.ReasoningTokens = dc.cached(P), dc.reasoning
		if !whole && mode == fakeupstream.UsageCumulative && !dc.cumCached {
			s.CachedTokens = -1 // llama.cpp's partial events have no timings
		}
		if dc.embed {
			s.CompletionTokens = 0
		}
	}
	estimated := func(completion int64) {
		s.UsageSource = estimator.UsageEstimated
		s.PromptTokens, s.CompletionTokens = estP, completion
		if dc.embed {
			s.CompletionTokens = 0
		}
	}
	wholeText := int64(-1)
	if text != "" {
		wholeText = (int64(len(text)) + 3) / 4
	}

	switch outcome {
	case "upstream-down":
		s.Status, s.Served = "502", false
		return s
	case "client-gone":
		s.Status = estimator.StatusClientClosed
		if !dc.stream {
			return s // left before any answer: nothing to count
		}
	case "upstream-cut", "error-in-200":
		s.Status = estimator.StatusUpstreamError
	}

	if outcome == "ok" {
		switch {
		case mode == fakeupstream.UsageOmitted && dc.stream:
			estimated(N)
		case mode == fakeupstream.UsageOmitted:
			estimated(wholeText)
		case mode == fakeupstream.UsageCumulative && dc.partialPrompt:
			reported(-1, N, true)
		default:
			reported(P, N, true)
		}
		return s
	}
	// The answer stopped after k tokens (or halfway through a whole body).
	if !dc.stream {
		if dc.headers && mode != fakeupstream.UsageOmitted {
			reported(P, N, true)
			s.UsageSource = estimator.UsageReportedPartial
			return s
		}
		estimated(-1)
		return s
	}
	if mode == fakeupstream.UsageCumulative && dc.cumulative {
		reported(P, K, false)
		s.UsageSource = estimator.UsageReportedPartial
		return s
	}
	estimated(K)
	return s
}
