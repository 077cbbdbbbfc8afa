package fakeupstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// do sends one request straight to the handler and returns the recorded answer.
func do(t *testing.T, s *Server, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec
}

// events splits an SSE body into its data payloads.
func events(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for block := range strings.SplitSeq(string(body), "\n\n") {
		if block == "" {
			continue
		}
		data, ok := strings.CutPrefix(block, "data: ")
		if !ok || strings.Contains(data, "\n") {
			t.Fatalf("event %q: want one data line", block)
		}
		out = append(out, data)
	}
	return out
}

func TestUsageArithmetic(t *testing.T) {
	// "hello world!" is 12 bytes: 3 tokens of text, plus 3 for the one message.
	tests := []struct {
		name, path, body string
		want             usage
	}{
		{
			name: "chat",
			path: "/v1/chat/completions",
			body: `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello world!"}]}`,
			want: mkUsage(6, 5, 3, 0),
		},
		{
			name: "chat content parts, max_completion_tokens wins, reasoning",
			path: "/v1/chat/completions",
			body: `{"model":"m","max_tokens":5,"max_completion_tokens":7,"reasoning_effort":"low",` +
				`"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello world!"}]}]}`,
			want: mkUsage(max(1, (8+12+3)/4+6), 7, 5, 3),
		},
		{
			name: "completion default length",
			path: "/v1/completions",
			body: `{"model":"m","prompt":"abcdefghi"}`,
			want: mkUsage(3, 16, 1, 0),
		},
		{
			name: "completion prompt array",
			path: "/v1/completions",
			body: `{"model":"m","max_tokens":1,"prompt":["abcd","efgh"]}`,
			want: mkUsage(2, 1, 1, 0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			rec := do(t, s, http.MethodPost, tt.path, tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
			}
			var got struct{ Usage usage }
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Usage != tt.want {
				t.Errorf("usage = %+v, want %+v", got.Usage, tt.want)
			}
			wantSent := Counts{
				Requests: 1, PromptTokens: tt.want.PromptTokens, CompletionTokens: tt.want.CompletionTokens,
				CachedTokens: tt.want.PromptTokensDetails.CachedTokens, ReasoningTokens: tt.want.CompletionTokensDetails.ReasoningTokens,
				UsageReported: 1,
			}
			if got := s.Sent()["m"]; got != wantSent {
				t.Errorf("Sent()[m] = %+v, want %+v", got, wantSent)
			}
		})
	}
}

func mkUsage(prompt, completion, cached, reasoning int64) usage {
	var u usage
	u.PromptTokens, u.CompletionTokens, u.TotalTokens = prompt, completion, prompt+completion
	u.PromptTokensDetails.CachedTokens = cached
	u.CompletionTokensDetails.ReasoningTokens = reasoning
	return u
}

func TestStream(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantEvents       int // data events, [DONE] included
		wantUsage        bool
	}{
		{"chat with usage", "/v1/chat/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"messages":[{"content":"hi"}]}`, 1 + 3 + 1 + 1 + 1, true},
		{"chat without usage", "/v1/chat/completions", `{"model":"m","stream":true,"max_tokens":3,"messages":[{"content":"hi"}]}`, 1 + 3 + 1 + 1, false},
		{"completion with usage", "/v1/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"prompt":"hi"}`, 2 + 1 + 1 + 1, true},
		{"completion include_usage false", "/v1/completions", `{"model":"m","stream":true,"stream_options":{"include_usage":false},"max_tokens":2,"prompt":"hi"}`, 2 + 1 + 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			rec := do(t, s, http.MethodPost, tt.path, tt.body)
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Fatalf("Content-Type = %q, want text/event-stream", ct)
			}
			evs := events(t, rec.Body.Bytes())
			if len(evs) != tt.wantEvents {
				t.Fatalf("got %d events, want %d:\n%s", len(evs), tt.wantEvents, rec.Body)
			}
			if evs[len(evs)-1] != "[DONE]" {
				t.Errorf("last event = %q, want [DONE]", evs[len(evs)-1])
			}
			for i, ev := range evs[:len(evs)-1] {
				var chunk struct {
					Choices []json.RawMessage
					Usage   *usage
				}
				if err := json.Unmarshal([]byte(ev), &chunk); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				last := i == len(evs)-2
				if gotUsage := chunk.Usage != nil; gotUsage != (tt.wantUsage && last) {
					t.Errorf("event %d: usage present = %v, want %v", i, gotUsage, tt.wantUsage && last)
				}
				if tt.wantUsage && last && len(chunk.Choices) != 0 {
					t.Errorf("usage chunk has %d choices, want 0", len(chunk.Choices))
				}
				// Chunks of a stream that asked for usage carry "usage":null.
				if hasKey := strings.Contains(ev, `"usage"`); hasKey != tt.wantUsage {
					t.Errorf("event %d has a usage key = %v, want %v", i, hasKey, tt.wantUsage)
				}
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"stream_options without stream", http.MethodPost, "/v1/chat/completions", `{"model":"m","stream_options":{"include_usage":true},"messages":[{"content":"x"}]}`, 400},
		{"no model", http.MethodPost, "/v1/chat/completions", `{"messages":[{"content":"x"}]}`, 400},
		{"no messages", http.MethodPost, "/v1/chat/completions", `{"model":"m"}`, 400},
		{"no prompt", http.MethodPost, "/v1/completions", `{"model":"m"}`, 400},
		{"not JSON", http.MethodPost, "/v1/completions", `{"model":`, 400},
		{"zero max_tokens", http.MethodPost, "/v1/completions", `{"model":"m","prompt":"x","max_tokens":0}`, 400},
		{"GET on chat", http.MethodGet, "/v1/chat/completions", ``, 405},
		{"unknown path", http.MethodGet, "/v2/else", ``, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Options{})
			rec := do(t, s, tt.method, tt.path, tt.body)
			if rec.Code != tt.want {
				t.Errorf("status = %d, want %d", rec.Code, tt.want)
			}
			var e struct{ Error struct{ Message string } }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
				t.Errorf("body %q: want an OpenAI error object (err %v)", rec.Body, err)
			}
			if sent := s.Sent(); len(sent) != 0 {
				t.Errorf("Sent() = %v after a refusal, want empty", sent)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	body := `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":9,"messages":[{"content":"same"}]}`
	a := do(t, New(Options{}), http.MethodPost, "/v1/chat/completions", body)
	b := do(t, New(Options{}), http.MethodPost, "/v1/chat/completions", body)
	if !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) {
		t.Errorf("two fakes answered differently:\n%s\n%s", a.Body, b.Body)
	}
	c := do(t, New(Options{}), http.MethodPost, "/v1/chat/completions", strings.Replace(body, "same", "other", 1))
	if bytes.Equal(a.Body.Bytes(), c.Body.Bytes()) {
		t.Error("different requests got the same answer")
	}
}

func TestModelsAndHealth(t *testing.T) {
	s := New(Options{Models: []string{"a", "b"}})
	rec := do(t, s, http.MethodGet, "/v1/models", "")
	var list struct{ Data []struct{ ID string } }
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 2 || list.Data[0].ID != "a" || list.Data[1].ID != "b" {
		t.Errorf("models = %+v, want a, b", list.Data)
	}
	if rec := do(t, s, http.MethodGet, "/health", ""); rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("/health = %d %q, want 200 and no body", rec.Code, rec.Body)
	}
}

func TestEchoesRequestID(t *testing.T) {
	s := New(Options{})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/health", nil)
	req.Header.Set("X-Request-Id", "abc")
	s.ServeHTTP(rec, req)
	if got := rec.Header().Values("X-Request-Id"); len(got) != 1 || got[0] != "abc" {
		t.Errorf("X-Request-Id = %q, want [abc]", got)
	}
}

// TestStartPacesAndClose runs the fake on a real port: tokens are paced by
// TokenDelay, and Close ends a stream that is still pacing.
func TestStartPacesAndClose(t *testing.T) {
	s, err := Start(t.Context(), Options{TokenDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL = %q, want a 127.0.0.1 address", s.URL())
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	body := `{"model":"m","stream":true,"max_tokens":3,"messages":[{"content":"hi"}]}`
	res, err := client.Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	// The role chunk and the first token come at once; the second token waits an hour.
	for i := range 2 {
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: {") {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a paced stream")
	}
	rest, _ := io.ReadAll(r)
	if strings.Contains(string(rest), "[DONE]") {
		t.Errorf("stream finished after Close: %q", rest)
	}
	if got := s.Sent()["m"].CompletionTokens; got != 1 {
		t.Errorf("CompletionTokens sent = %d, want 1", got)
	}
}

func TestStartStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := s.Close(); err != nil {
		t.Errorf("Close after cancel: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCanonicalHash: a request whose stream_options a proxy set hashes as
// the client's request does, however the client wrote its own, so both get
// the same answer; the rest of the request still counts.
func TestCanonicalHash(t *testing.T) {
	same := []struct{ client, proxied string }{
		{`{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream_options":null, "model":"m"}`, `{"stream_options":{"include_usage":true}, "model":"m"}`},
		{`{ "model" : "m" , "stream_options" : {} }`, `{ "model" : "m" , "stream_options" : {"include_usage":true} }`},
		{`{"stream_options":{"include_usage":false}}`, `{"stream_options":{"include_usage":true}}`},
		// Duplicates: the proxy edits the last, as upstream decoders read it.
		{`{"stream_options":{"a":1},"stream_options":{}}`, `{"stream_options":{"a":1},"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range same {
		if canonicalHash([]byte(tt.client)) != canonicalHash([]byte(tt.proxied)) {
			t.Errorf("canonicalHash(%s) != canonicalHash(%s)", tt.client, tt.proxied)
		}
	}
	differ := []struct{ a, b string }{
		{`{"model":"m"}`, `{"model":"n"}`},
		{`{"a":[{"stream_options":1}]}`, `{"a":[{"stream_options":2}]}`},
		{`{"a":"\"stream_options\":1"}`, `{"a":"\"stream_options\":2"}`},
	}
	for _, tt := range differ {
		if canonicalHash([]byte(tt.a)) == canonicalHash([]byte(tt.b)) {
			t.Errorf("canonicalHash(%s) == canonicalHash(%s)", tt.a, tt.b)
		}
	}
}

// TestTimings: with Timings, an OpenAI stream carries llama.cpp's timings on
// its last chunk (the usage chunk when asked for, else the finish_reason
// chunk) and no "usage":null; a whole answer beside its usage.
func TestTimings(t *testing.T) {
	s := New(Options{Timings: true})
	const msgs = `"max_tokens":3,"messages":[{"role":"user","content":"hello world!"}]}`
	want := `"timings":{"cache_n":3,"predicted_ms":30,"predicted_n":3,"prompt_ms":2.5,"prompt_n":3}`
	for _, tt := range []struct {
		name, body string
		on         int // index from the end of the event with timings
	}{
		{"plain stream", `{"model":"m","stream":true,` + msgs, 2},
		{"include_usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs, 2},
	} {
		evs := events(t, do(t, s, http.MethodPost, "/v1/chat/completions", tt.body).Body.Bytes())
		for i, e := range evs {
			has := strings.Contains(e, want)
			if has != (i == len(evs)-tt.on) || strings.Contains(e, `"usage":null`) {
				t.Errorf("%s: event %d of %d %s: want timings on event %d only, and no usage:null", tt.name, i, len(evs), e, len(evs)-tt.on)
			}
		}
		if tt.name == "include_usage" && !strings.Contains(evs[len(evs)-2], `"choices":[]`) {
			t.Errorf("%s: timings on %s, want the usage chunk", tt.name, evs[len(evs)-2])
		}
	}
	if body := do(t, s, http.MethodPost, "/v1/chat/completions", `{"model":"m",`+msgs).Body.String(); !strings.Contains(body, want) {
		t.Errorf("whole answer %s: no timings", body)
	}
	if c := s.Sent()["m"]; c.UsageReported != 3 {
		t.Errorf("answers with counts = %d, want 3 (timings are counts)", c.UsageReported)
	}
}

// TestCloseAfterStream: as llama-server does, the terminator of a stream
// comes in a write of its own after TerminatorDelay, and the connection is
// closed CloseAfterStream later, a request written on it meanwhile unread.
func TestCloseAfterStream(t *testing.T) {
	s, err := Start(t.Context(), LlamaServer(Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := `{"model":"m","stream":true,"max_tokens":2,"messages":[{"content":"hi"}]}`
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.Contains(got, []byte("data: [DONE]\n\n\r\n")) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read %q, then %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if bytes.HasSuffix(got, []byte("0\r\n\r\n")) {
		t.Fatalf("the terminator came with [DONE]: %q", got)
	}
	if bytes.Contains(got, []byte("Connection: close")) {
		t.Fatal("response said Connection: close; llama-server says keep-alive")
	}
	at := time.Now()
	n, err := io.ReadFull(conn, buf[:5])
	if err != nil || string(buf[:n]) != "0\r\n\r\n" {
		t.Fatalf("read %q, %v; want the terminator", buf[:n], err)
	}
	// The next request, at once: never answered.
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("a request sent after a stream was answered: %q", buf[:n])
	}
	if d := time.Since(at); d < time.Millisecond {
		t.Errorf("connection closed %v after the terminator, want about 5ms", d)
	}
}
