package requests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// TestFilterKeepsWhatUsageChunkCarries: llama-server, asked for usage,
// moves its timings onto the usage chunk; the filter takes the usage
// member out of it and leaves the rest for the client. A usage chunk with
// nothing else goes whole.
func TestFilterKeepsWhatUsageChunkCarries(t *testing.T) {
	const (
		tok    = `data: {"choices":[{"delta":{"content":"x"},"index":0}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}` + "\n\n"
		finish = `data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}` + "\n\n"
		head   = `data: {"choices":[],"created":1,"id":"c","model":"m","object":"chat.completion.chunk","system_fingerprint":"b10573",`
		times  = `"timings":{"cache_n":13,"predicted_n":1,"prompt_n":40}`
		usage  = `"usage":{"completion_tokens":1,"prompt_tokens":53,"total_tokens":54}`
		done   = "data: [DONE]\n\n"
	)
	for _, tt := range []struct{ name, in, want string }{
		{"timings kept", tok + finish + head + times + "," + usage + "}\n\n" + done, tok + finish + head + times + "}\n\n" + done},
		{"nothing else", tok + finish + head + usage + "}\n\n" + done, tok + finish + done},
	} {
		for _, step := range []int{1, 7, 1 << 16} {
			if got := string(filterAll([]byte(tt.in), step, 1<<16)); got != tt.want {
				t.Errorf("%s, reads of %d: got\n%s\nwant\n%s", tt.name, step, got, tt.want)
			}
		}
	}
}

// injectedUsage is the usage member the fake writes on the usage chunk of a
// stream that asked for it: what the proxy, having asked, takes out.
var injectedUsage = regexp.MustCompile(`,"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+),"total_tokens":\d+,"prompt_tokens_details":\{"cached_tokens":(\d+)\},"completion_tokens_details":\{"reasoning_tokens":\d+\}\}`)

// llamaExpect is what a client of the proxy must get for a plain stream
// from a fake llama-server: the stream the fake sends the request the proxy
// sends (include_usage added), less only the usage member; and the counts
// in that usage.
func llamaExpect(t *testing.T, url, body string) (stream string, usage dialect.Usage) {
	t.Helper()
	edit, ok := dialect.IncludeUsageEdit([]byte(body))
	if !ok {
		t.Fatalf("no include_usage edit for %s", body)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	_, got := send(t, c, url, query{"POST", "/v1/chat/completions", string(edit.Apply([]byte(body))), nil})
	m := injectedUsage.FindAllSubmatchIndex(got, -1)
	if len(m) != 1 || !bytes.Contains(got, []byte(`"timings"`)) {
		t.Fatalf("fake sent %q: want one usage chunk, and timings", got)
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(string(got[m[0][i]:m[0][i+1]]), 10, 64); return v }
	usage = dialect.Usage{Prompt: n(2), Completion: n(4), Cached: n(6), Reasoning: -1}
	return string(got[:m[0][0]]) + string(got[m[0][1]:]), usage
}

// hangUpAtDone reads a stream as the OpenAI SDKs do against llama-server:
// up to data: [DONE], and then closes the connection at once, before the
// chunked terminator that follows; or (whole) as curl does, to its end.
func hangUpAtDone(t *testing.T, c *http.Client, url, body string, whole bool) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // before its end: the transport closes the connection
	var got []byte
	buf := make([]byte, 4<<10)
	for whole || !bytes.HasSuffix(got, []byte("data: [DONE]\n\n")) {
		n, err := res.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF && (whole || bytes.HasSuffix(got, []byte("data: [DONE]\n\n"))) {
			break
		}
		if err != nil {
			t.Fatalf("read %q, then %v", got, err)
		}
	}
	return res.StatusCode, string(got)
}

// TestLlamaServerReplay replays the first hour on a real node in front of
// a fake llama-server (fakeupstream.LlamaServer): a few hundred plain
// streams, most read as the OpenAI SDK reads them (hanging up at [DONE]),
// some to their end (curl), with non-streamed answers between. Not one
// whole answer may be recorded client_closed, no request may see a 502 or
// leave one in the records (a request written onto a connection the fake
// had closed is sent again), and every client must get the fake's stream
// byte for byte, timings included, less only the usage the proxy asked for.
func TestLlamaServerReplay(t *testing.T) {
	fake, err := fakeupstream.Start(t.Context(), fakeupstream.LlamaServer(fakeupstream.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	g := newRig(t, http.NotFoundHandler(), Options{Target: fake.URL()})

	type want struct {
		stream string
		usage  dialect.Usage
	}
	var bodies []string
	var wants []want
	for i := range 5 {
		body := fmt.Sprintf(`{"model":"m","stream":true,"max_tokens":%d,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"question number %d, please?"}]}`, 2+i, i)
		s, u := llamaExpect(t, fake.URL(), body)
		bodies, wants = append(bodies, body), append(wants, want{s, u})
	}
	const n = 300
	for i := range n {
		k := i % len(bodies)
		switch {
		case i%10 == 9:
			res, got := send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", `{"model":"m","max_tokens":9,"messages":[{"content":"whole"}]}`, nil})
			if res.StatusCode != http.StatusOK || !bytes.Contains(got, []byte(`"timings"`)) {
				t.Fatalf("request %d: %d %s", i, res.StatusCode, got)
			}
		default:
			whole := i%3 == 0
			status, got := hangUpAtDone(t, g.client, g.front.URL, bodies[k], whole)
			if status != http.StatusOK {
				t.Fatalf("request %d: status %d: %s", i, status, got)
			}
			if got != wants[k].stream {
				t.Fatalf("request %d: client got\n%s\nwant (what the fake sent, less the usage asked for)\n%s", i, got, wants[k].stream)
			}
		}
	}
	spans := g.rec.wait(t, n)
	bad := 0
	for i, s := range spans {
		if s.Status != "200" || !s.Served || s.UsageSource != estimator.UsageReported || s.PromptTokens <= 0 {
			if bad++; bad <= 5 {
				t.Errorf("span %d: status %s, served %v, usage %s (%d prompt tokens): want 200, served, reported", i, s.Status, s.Served, s.UsageSource, s.PromptTokens)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d spans wrong", bad, n)
	}
	// Each stream's counts are the fake's, not an estimate.
	counts := map[int64]dialect.Usage{}
	for _, w := range wants {
		counts[w.usage.Completion] = w.usage
	}
	for _, s := range spans {
		if u, ok := counts[s.CompletionTokens]; ok && (s.PromptTokens != u.Prompt || s.CachedTokens != u.Cached) {
			t.Errorf("span counts %d/%d/%d, want the fake's %+v", s.PromptTokens, s.CompletionTokens, s.CachedTokens, u)
		}
	}
	retried := strings.Count(g.logs.String(), "sent again on a new connection")
	t.Logf("requests sent again after a closed kept-alive connection: %d", retried)
	if retried == 0 {
		t.Error("no request was written onto a connection the fake had closed: the replay did not test the retry")
	}
}

// TestPlainStreamCountsFromTimings: without include_usage (the proxy told
// not to add it), llama-server's stream carries its counts in timings
// only, chat template included: the span has them, not an estimate from
// the client's text.
func TestPlainStreamCountsFromTimings(t *testing.T) {
	fake, err := fakeupstream.Start(t.Context(), fakeupstream.LlamaServer(fakeupstream.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	g := newRig(t, http.NotFoundHandler(), Options{Target: fake.URL(), NoIncludeUsage: true})
	body := `{"model":"m","stream":true,"max_tokens":4,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}`
	status, got := hangUpAtDone(t, g.client, g.front.URL, body, false)
	if status != http.StatusOK || !strings.Contains(got, `"finish_reason":"length"}],"timings":{"cache_n":`) {
		t.Fatalf("status %d, stream %s: want timings on the finish chunk", status, got)
	}
	// The fake's prompt: a quarter of the 13 bytes of text, rounded up, and
	// 3 a message (its chat template); the estimate would be 4.
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Model: "m", Status: "200",
		PromptTokens: 10, CompletionTokens: 4, CachedTokens: 5, ReasoningTokens: -1,
		UsageSource: estimator.UsageReported, Devices: []string{"0", "1"}, Served: true,
	})
}

// TestCountOverTheBound: a count no request has (llama.cpp's prompt_n +
// cache_n overflowing) leaves the span's counts unknown and its usage
// invalid; the record is kept.
func TestCountOverTheBound(t *testing.T) {
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"content":"abc","stop":true,"timings":{"prompt_n":9223372036854775807,"cache_n":1,"predicted_n":3}}`)
	}), Options{})
	if res, _ := send(t, g.client, g.front.URL, query{"POST", "/completion", `{"prompt":"hi"}`, nil}); res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	checkSpan(t, g.rec.span(t), estimator.Span{
		Upstream: upstreamName, Status: "200",
		PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageInvalid, Devices: []string{"0", "1"}, Served: true,
	})
}

// TestModelBeforeTrailingBytes: a body with bytes after its JSON object
// keeps its model in the span.
func TestModelBeforeTrailingBytes(t *testing.T) {
	g := newRig(t, fakeupstream.New(fakeupstream.Options{}), Options{})
	send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", `{"model":"m","messages":[{"content":"hi"}]}` + "\n\x00", nil})
	if s := g.rec.span(t); s.Model != "m" {
		t.Errorf("model %q, want m", s.Model)
	}
}

// TestCutAfterHeaders: an upstream that fails after its headers, before its
// body (or before a whole answer's end), leaves the client the status that
// came and a body cut short, not a connection closed with nothing; the span
// says upstream_error.
func TestCutAfterHeaders(t *testing.T) {
	for _, tt := range []struct {
		name, path, ct, part string
	}{
		{"stream, no event", "/v1/chat/completions", "text/event-stream", ""},
		{"whole answer, half of it", "/v1/chat/completions", "application/json", `{"choices":[{"message":`},
		{"unmetered path", "/v1/else", "application/json", `{"a":`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				if tt.ct == "application/json" {
					w.Header().Set("Content-Length", "1000")
				}
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, tt.part)
				rc := http.NewResponseController(w)
				rc.Flush()
				if c, _, err := rc.Hijack(); err == nil {
					c.Close()
				}
			}), Options{})
			req, _ := http.NewRequestWithContext(t.Context(), "POST", g.front.URL+tt.path, strings.NewReader(`{"model":"m","stream":true}`))
			res, err := g.client.Do(req)
			if err != nil {
				t.Fatalf("no status: %v", err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || err == nil || string(got) != tt.part {
				t.Errorf("status %d, body %q, %v: want 200, %q and an error", res.StatusCode, got, err, tt.part)
			}
			if tt.path == "/v1/else" {
				return
			}
			if s := g.rec.span(t); s.Status != estimator.StatusUpstreamError {
				t.Errorf("status %s, want upstream_error", s.Status)
			}
		})
	}
}

// TestProxyOwn502: a 502 is the proxy's answer to an upstream that sent
// nothing: recorded 502 even when the client has half-closed its
// connection (which ends its context in net/http) before it came, and
// never charged, even where the upstream had the whole request.
func TestProxyOwn502(t *testing.T) {
	t.Run("upstream closes after reading", func(t *testing.T) {
		var calls atomic.Int64
		g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			io.ReadAll(r.Body)
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
		}), Options{})
		if res, _ := send(t, g.client, g.front.URL, query{"POST", "/v1/chat/completions", `{"model":"m"}`, nil}); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", res.StatusCode)
		}
		if s := g.rec.span(t); s.Status != "502" || s.Served {
			t.Errorf("status %s, served %v: want 502, not served", s.Status, s.Served)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("upstream saw %d requests, want 1: a new connection failing is not tried again", n)
		}
	})
	t.Run("half-closed client", func(t *testing.T) {
		g := newRig(t, http.NotFoundHandler(), Options{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done() // the client's half-close
			return nil, errors.New("upstream dropped the connection")
		})})
		conn, err := net.Dial("tcp", strings.TrimPrefix(g.front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		body := `{"model":"m"}`
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		conn.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(got), "HTTP/1.1 502") {
			t.Fatalf("half-closed client got %q, want a 502", got)
		}
		if s := g.rec.span(t); s.Status != "502" || s.Served {
			t.Errorf("status %s, served %v: want 502, not served", s.Status, s.Served)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestStaleConnectionRetriedOnce: a request written onto a kept-alive
// connection the upstream has closed is sent again once, on a new
// connection; a failure on a new connection, or a timeout, is not.
func TestStaleConnectionRetriedOnce(t *testing.T) {
	var calls atomic.Int64
	g := newRig(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		if calls.Add(1) == 2 {
			// The second request, on the first one's kept-alive connection:
			// closed unanswered, as llama-server's closing does.
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}), Options{})
	q := query{"POST", "/v1/chat/completions", `{"model":"m"}`, nil}
	for i := range 2 {
		if res, _ := send(t, g.client, g.front.URL, q); res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i, res.StatusCode)
		}
	}
	spans := g.rec.wait(t, 2)
	for _, s := range spans {
		if s.Status != "200" || !s.Served || s.PromptTokens != 1 {
			t.Errorf("span %+v: want 200, served, reported", s)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("upstream saw %d requests, want 3 (one sent again)", n)
	}
}
