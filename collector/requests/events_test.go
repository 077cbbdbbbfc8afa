package requests

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/schematest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/schema"
)

// eventSink keeps what the event API passed on, in order.
type eventSink struct {
	mu    sync.Mutex
	calls []string // "begin id", "end id", "submit id"
	spans []estimator.Span
}

func (s *eventSink) Begin(sp estimator.Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "begin "+sp.ID)
	s.spans = append(s.spans, sp)
}

func (s *eventSink) End(sp estimator.Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "end "+sp.ID)
	s.spans = append(s.spans, sp)
}

func (s *eventSink) Submit(sp estimator.Span) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "submit "+sp.ID)
	s.spans = append(s.spans, sp)
}

var evNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ts(d time.Duration) string { return evNow.Add(d).Format(time.RFC3339Nano) }

func testDevices(upstream string, gpus []string) ([]string, error) {
	if len(gpus) > 0 {
		for _, g := range gpus {
			if g != "0" && g != "1" {
				return nil, fmt.Errorf("GPU %q is not on this node", g)
			}
		}
		return gpus, nil
	}
	if upstream == "tgi" {
		return []string{"0"}, nil
	}
	return nil, errors.New("upstream is not configured: name its gpus")
}

func newTestEvents(t *testing.T) (*Events, *eventSink) {
	t.Helper()
	sink := &eventSink{}
	e, err := NewEvents(EventOptions{History: 15 * time.Minute, SettleDelay: 500 * time.Millisecond, Devices: testDevices,
		TenantSecret: testSecret, TenantRaw: true, MaxBodyBytes: 4096, MaxEvents: 3, MaxOpen: 2, Now: func() time.Time { return evNow }}, sink)
	if err != nil {
		t.Fatal(err)
	}
	return e, sink
}

// post sends body to the event API and returns the status and answer.
func post(t *testing.T, e *Events, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/requests", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("answer %q is not JSON: %v", rec.Body, err)
	}
	return rec.Code, out
}

func param(ans map[string]any) string {
	e, _ := ans["error"].(map[string]any)
	p, _ := e["param"].(string)
	return p
}

// TestEventRefusals: every refusal is a 4xx whose error names the field.
func TestEventRefusals(t *testing.T) {
	span := func(extra string) string {
		return `{"id":"r1","upstream":"tgi","start":"` + ts(-2*time.Second) + `","end":"` + ts(-time.Second) + `"` + extra + `}`
	}
	tests := []struct {
		name, body string
		status     int
		param      string
	}{
		{"not JSON", `{"id":`, 400, ""},
		{"empty", ``, 400, ""},
		{"a number", `7`, 400, ""},
		{"trailing data", span("") + ` {}`, 400, ""},
		{"unknown field", span(`,"prompt":"secret"`), 400, "prompt"},
		{"wrong type", span(`,"prompt_tokens":"12"`), 400, "prompt_tokens"},
		{"wrong type in a batch", `[` + span("") + `,` + span(`,"served":"yes"`) + `]`, 400, "[1].served"},
		{"fraction", span(`,"completion_tokens":1.5`), 400, "completion_tokens"},
		{"timestamp not RFC 3339", `{"id":"r","upstream":"tgi","start":"yesterday","end":"` + ts(0) + `"}`, 400, ""},
		{"empty batch", `[]`, 400, ""},
		{"batch too large", `[` + span("") + `,` + span("") + `,` + span("") + `,` + span("") + `]`, 413, ""},
		{"bad type", span(`,"type":"finish"`), 422, "type"},
		{"no id", `{"upstream":"tgi","start":"` + ts(-time.Second) + `","end":"` + ts(0) + `"}`, 422, "id"},
		{"id with a space", strings.Replace(span(""), `"r1"`, `"r 1"`, 1), 422, "id"},
		{"no upstream", `{"id":"r","start":"` + ts(-time.Second) + `","end":"` + ts(0) + `"}`, 422, "upstream"},
		{"upstream with a slash", strings.Replace(span(""), `"tgi"`, `"a/b"`, 1), 422, "upstream"},
		{"tenant not visible", span(`,"tenant":"a b"`), 422, "tenant"},
		{"no start", `{"id":"r","upstream":"tgi","end":"` + ts(0) + `"}`, 422, "start"},
		{"no end", `{"id":"r","upstream":"tgi","start":"` + ts(-time.Second) + `"}`, 422, "end"},
		{"end before start", `{"id":"r","upstream":"tgi","start":"` + ts(-time.Second) + `","end":"` + ts(-2*time.Second) + `"}`, 422, "end"},
		{"in the future", `{"id":"r","upstream":"tgi","start":"` + ts(-time.Second) + `","end":"` + ts(time.Minute) + `"}`, 422, "end"},
		{"older than the history", `{"id":"r","upstream":"tgi","start":"` + ts(-16*time.Minute) + `","end":"` + ts(0) + `"}`, 422, "start"},
		{"first token outside", span(`,"first_token":"` + ts(-3*time.Second) + `"`), 422, "first_token"},
		{"negative count", span(`,"prompt_tokens":-1`), 422, "prompt_tokens"},
		{"status out of range", span(`,"status":700`), 422, "status"},
		{"status unknown word", span(`,"status":"teapot"`), 422, "status"},
		{"usage_source unknown with counts", span(`,"prompt_tokens":3,"usage_source":"unknown"`), 422, "usage_source"},
		{"usage_source reported without counts", span(`,"usage_source":"reported"`), 422, "usage_source"},
		{"usage_source invalid", span(`,"prompt_tokens":3,"usage_source":"guessed"`), 422, "usage_source"},
		{"begin with an end", `{"type":"begin","id":"r","upstream":"tgi","start":"` + ts(-time.Second) + `","end":"` + ts(0) + `"}`, 422, "type"},
		{"bad gpu", span(`,"gpus":[true]`), 422, "gpus[0]"},
		{"gpu not on the node", span(`,"gpus":[7]`), 422, "gpus"},
		{"unconfigured upstream without gpus", strings.Replace(span(""), `"tgi"`, `"other"`, 1), 422, "gpus"},
		{"second event bad", `[` + span("") + `,{"id":"r2","upstream":"tgi","start":"` + ts(-time.Second) + `"}]`, 422, "[1].end"},
		{"null body", `null`, 422, ""},
		{"null in a batch", `[` + span("") + `,null]`, 422, "[1]"},
		{"tokens above 2^40", span(`,"prompt_tokens":1099511627777`), 422, "prompt_tokens"},
		{"tokens beyond int64", span(`,"completion_tokens":99999999999999999999`), 422, "completion_tokens"},
		{"gpu index out of range", span(`,"gpus":[128]`), 422, "gpus[0]"},
		{"gpu name too long", span(`,"gpus":["GPU-` + strings.Repeat("a", 93) + `"]`), 422, "gpus[0]"},
		{"gpus too many", span(`,"gpus":[` + strings.TrimSuffix(strings.Repeat("0,", MaxEventGPUs+1), ",") + `]`), 422, "gpus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, sink := newTestEvents(t)
			status, ans := post(t, e, tt.body)
			if status != tt.status || param(ans) != tt.param {
				t.Errorf("%d %v, want %d naming %q", status, ans, tt.status, tt.param)
			}
			msg := ans["error"].(map[string]any)["message"].(string)
			if tt.param != "" && !strings.HasPrefix(msg, tt.param+": ") {
				t.Errorf("message %q does not start with the field", msg)
			}
			if strings.HasPrefix(tt.name, "null") && strings.Contains(msg, "id") {
				t.Errorf("message %q names id: the body is not an event", msg)
			}
			if strings.HasPrefix(tt.name, "tokens") && !strings.Contains(msg, "9999") && !strings.Contains(msg, "1099511627777") {
				t.Errorf("message %q does not give the value", msg)
			}
			if len(sink.calls) != 0 {
				t.Errorf("a refused body reached the sink: %v", sink.calls)
			}
		})
	}
}

func TestEventTransport(t *testing.T) {
	e, _ := newTestEvents(t)
	for _, tt := range []struct {
		method, ct, body string
		want             int
	}{
		{"GET", "application/json", "", 405},
		{"POST", "text/plain", "{}", 415},
		{"POST", "", "{}", 415},
		{"POST", "application/json", `{"id":"` + strings.Repeat("x", 5000) + `"}`, 413},
	} {
		req := httptest.NewRequest(tt.method, "/v1/requests", strings.NewReader(tt.body))
		if tt.ct != "" {
			req.Header.Set("Content-Type", tt.ct)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tt.want || !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("%s %s: %d %s, want %d and an error", tt.method, tt.ct, rec.Code, rec.Body, tt.want)
		}
	}
}

// TestEventBeginEnd: a request begun and ended through the API reaches the
// sink as a proxied one does; retries are duplicates, never a second record.
func TestEventBeginEnd(t *testing.T) {
	e, sink := newTestEvents(t)
	begin := `{"type":"begin","id":"q1","upstream":"tgi","model":"llama","tenant":"team-a","start":"` + ts(-3*time.Second) + `"}`
	if status, ans := post(t, e, begin); status != 202 || ans["accepted"] != 1.0 {
		t.Fatalf("begin: %d %v", status, ans)
	}
	if status, ans := post(t, e, begin); status != 409 || param(ans) != "id" {
		t.Errorf("second begin: %d %v, want 409 naming id", status, ans)
	}
	if status, ans := post(t, e, `{"id":"q1","upstream":"tgi","start":"`+ts(-2*time.Second)+`","end":"`+ts(0)+`"}`); status != 409 {
		t.Errorf("a span for a begun id: %d %v, want 409", status, ans)
	}
	if status, ans := post(t, e, `{"type":"end","id":"q1","upstream":"vllm","end":"`+ts(0)+`"}`); status != 422 || param(ans) != "upstream" {
		t.Errorf("end on another upstream: %d %v", status, ans)
	}
	end := `{"type":"end","id":"q1","upstream":"tgi","end":"` + ts(0) + `","first_token":"` + ts(-2*time.Second) + `","prompt_tokens":12,"completion_tokens":30,"status":200}`
	status, ans := post(t, e, end)
	if status != 202 || ans["accepted"] != 1.0 || ans["warnings"] != nil {
		t.Fatalf("end: %d %v", status, ans)
	}
	if status, ans := post(t, e, end); status != 202 || ans["accepted"] != 0.0 || ans["duplicates"] != 1.0 {
		t.Errorf("retried end: %d %v, want a duplicate", status, ans)
	}
	if want := []string{"begin q1", "end q1"}; !slices.Equal(sink.calls, want) {
		t.Fatalf("sink calls %v, want %v", sink.calls, want)
	}
	got := sink.spans[1]
	want := estimator.Span{ID: "q1", Upstream: "tgi", Model: "llama", Tenant: "team-a", Start: evNow.Add(-3 * time.Second),
		FirstToken: evNow.Add(-2 * time.Second), End: evNow, Status: "200", PromptTokens: 12, CompletionTokens: 30,
		CachedTokens: -1, ReasoningTokens: -1, UsageSource: estimator.UsageReported, Devices: []string{"0"}, Served: true}
	if !equalSpans(got, want) {
		t.Errorf("span\n%+v\nwant\n%+v", got, want)
	}
	if e.Open() != 0 {
		t.Errorf("%d open after the end", e.Open())
	}
}

// TestEventSpans: whole spans are submitted, late ones with a warning; an
// end with no begin and no start is refused; a batch is taken whole or not
// at all; the number of open requests is bounded; abandoned ones expire.
func TestEventSpans(t *testing.T) {
	e, sink := newTestEvents(t)
	status, ans := post(t, e, `[{"id":"s1","upstream":"x","gpus":[0,"1"],"start":"`+ts(-200*time.Millisecond)+`","end":"`+ts(0)+`","status":"client_closed"},`+
		`{"type":"end","id":"s2","upstream":"tgi","start":"`+ts(-10*time.Second)+`","end":"`+ts(0)+`","status":429}]`)
	if status != 202 || ans["accepted"] != 2.0 {
		t.Fatalf("%d %v", status, ans)
	}
	warns, _ := ans["warnings"].([]any)
	if len(warns) != 1 || !strings.HasPrefix(warns[0].(string), "[1].start: ") || !strings.Contains(warns[0].(string), "history_truncated") {
		t.Errorf("warnings %v: want one on [1].start", warns)
	}
	if want := []string{"submit s1", "submit s2"}; !slices.Equal(sink.calls, want) {
		t.Fatalf("calls %v, want %v", sink.calls, want)
	}
	if s := sink.spans[0]; !slices.Equal(s.Devices, []string{"0", "1"}) || s.Status != "client_closed" || !s.Served || s.UsageSource != "unknown" || s.PromptTokens != -1 {
		t.Errorf("span %+v", s)
	}
	if s := sink.spans[1]; s.Served || s.Status != "429" {
		t.Errorf("a 429 is not served: %+v", s)
	}
	if status, ans := post(t, e, `{"type":"end","id":"s9","upstream":"tgi","end":"`+ts(0)+`"}`); status != 422 || param(ans) != "start" {
		t.Errorf("end of nothing without a start: %d %v", status, ans)
	}

	// All or nothing: the bad third event keeps the first two out.
	sink.calls = nil
	b := func(id string) string {
		return `{"type":"begin","id":"` + id + `","upstream":"tgi","start":"` + ts(-time.Second) + `"}`
	}
	if status, ans := post(t, e, `[`+b("o1")+`,`+b("o2")+`,`+b("o1")+`]`); status != 409 || param(ans) != "[2].id" {
		t.Errorf("%d %v, want 409 on [2].id", status, ans)
	}
	if len(sink.calls) != 0 || e.Open() != 0 {
		t.Fatalf("a refused batch left calls %v, %d open", sink.calls, e.Open())
	}
	if status, ans := post(t, e, `[`+b("o1")+`,`+b("o2")+`]`); status != 202 || e.Open() != 2 {
		t.Fatalf("%d %v", status, ans)
	}
	if status, ans := post(t, e, b("o3")); status != 429 {
		t.Errorf("past MaxOpen: %d %v, want 429", status, ans)
	}

	// An hour later the begun requests are given up as abandoned.
	e.Expire(evNow.Add(14 * time.Minute))
	if e.Open() != 2 {
		t.Fatal("expired before the history passed")
	}
	e.Expire(evNow.Add(16 * time.Minute))
	if e.Open() != 0 {
		t.Fatal("not expired")
	}
	last := sink.spans[len(sink.spans)-1]
	if last.Status != estimator.StatusAbandoned || !last.End.Equal(evNow.Add(16*time.Minute)) || last.UsageSource != "unknown" {
		t.Errorf("abandoned span %+v", last)
	}
}

// FuzzEvents: the event decoder never panics, and what it accepts is a
// sane span: times in order and within the window, counts known or -1.
func FuzzEvents(f *testing.F) {
	f.Add([]byte(`{"id":"r1","upstream":"tgi","start":"2025-06-01T11:59:58Z","end":"2025-06-01T12:00:00Z","prompt_tokens":3}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, _, ferr := decodeEvents(body, evNow, 15*time.Minute, 100)
		if ferr != nil {
			if ferr.status < 400 || ferr.status > 499 || ferr.msg == "" {
				t.Fatalf("refusal %+v is not a 4xx with a message", ferr)
			}
			return
		}
		if len(evs) == 0 {
			t.Fatal("accepted nothing without an error")
		}
		for _, ev := range evs {
			s := ev.span
			if !visible(s.ID, maxRequestID) || s.Upstream == "" {
				t.Fatalf("accepted id %q upstream %q", s.ID, s.Upstream)
			}
			if ev.kind != "begin" && ev.hasStart && s.End.Before(s.Start) {
				t.Fatalf("end before start: %+v", s)
			}
			for _, n := range []int64{s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.ReasoningTokens} {
				if n < -1 {
					t.Fatalf("count %d", n)
				}
			}
			if ev.kind != "begin" && s.UsageSource == "" {
				t.Fatal("no usage_source")
			}
			for _, tm := range []time.Time{s.Start, s.End} {
				if !tm.IsZero() && (tm.After(evNow.Add(futureSlack)) || tm.Before(evNow.Add(-15*time.Minute))) {
					t.Fatalf("time %v outside the window", tm)
				}
			}
		}
	})
}

// TestEventAbandonedLogged: requests given up as abandoned are logged as
// one episode: a warning at the first, debug lines for the next, and one
// info line with their count once none has been abandoned for the
// history; the next abandoned request warns again.
func TestEventAbandonedLogged(t *testing.T) {
	logs := &testlog.Buffer{}
	now := evNow
	e, err := NewEvents(EventOptions{History: 15 * time.Minute, Devices: testDevices, TenantSecret: testSecret,
		Now: func() time.Time { return now }, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, &eventSink{})
	if err != nil {
		t.Fatal(err)
	}
	begin := func(id string) {
		t.Helper()
		body := `{"type":"begin","id":"` + id + `","upstream":"tgi","start":"` + now.Format(time.RFC3339Nano) + `"}`
		if status, ans := post(t, e, body); status != 202 {
			t.Fatalf("begin %s: %d %v", id, status, ans)
		}
	}
	const msg = "event API: a request was begun and never ended; it is recorded as abandoned"
	count := func(level string) int { return strings.Count(logs.String(), "level="+level+` msg="`+msg) }
	for _, id := range []string{"a1", "a2", "a3"} {
		begin(id)
	}
	now = evNow.Add(10 * time.Minute)
	begin("a4")

	e.Expire(evNow.Add(16 * time.Minute)) // a1 to a3
	if w, d := count("WARN"), count("DEBUG"); w != 1 || d != 2 {
		t.Errorf("three abandoned: %d warn and %d debug lines, want 1 and 2:\n%s", w, d, logs)
	}
	e.Expire(evNow.Add(26 * time.Minute)) // a4, 10 minutes after the others
	if w, d := count("WARN"), count("DEBUG"); w != 1 || d != 3 {
		t.Errorf("a fourth: %d warn and %d debug lines, want 1 and 3:\n%s", w, d, logs)
	}
	if strings.Contains(logs.String(), "level=INFO") {
		t.Errorf("a summary before the history passed without one abandoned:\n%s", logs)
	}
	e.Expire(evNow.Add(42 * time.Minute))
	if !strings.Contains(logs.String(), `level=INFO msg="event API: no request abandoned for attribution.history" failed_requests=4 `) {
		t.Errorf("no summary counting 4:\n%s", logs)
	}

	now = evNow.Add(50 * time.Minute)
	begin("a5")
	e.Expire(evNow.Add(66 * time.Minute))
	if w := count("WARN"); w != 2 {
		t.Errorf("a new episode: %d warn lines, want 2:\n%s", w, logs)
	}
	if strings.Count(logs.String(), "request_id=") != 5 {
		t.Errorf("want each abandoned request named once:\n%s", logs)
	}
}

// TestEventEndedRestored: what one process's event API ended, or left
// begun at its stop, is a duplicate for the next one (RestoreEnded of its
// Ended), within the history; an id ended longer ago is not remembered.
func TestEventEndedRestored(t *testing.T) {
	e, _ := newTestEvents(t)
	for _, body := range []string{
		`{"type":"begin","id":"open","upstream":"tgi","start":"` + ts(-3*time.Second) + `"}`,
		`{"id":"done","upstream":"tgi","start":"` + ts(-3*time.Second) + `","end":"` + ts(-time.Second) + `"}`,
	} {
		if status, ans := post(t, e, body); status != 202 {
			t.Fatalf("%s: %d %v", body, status, ans)
		}
	}
	ended := e.Ended()
	if len(ended) != 2 || ended[0].ID != "done" || ended[1].ID != "open" {
		t.Fatalf("Ended() = %v, want done, then open", ended)
	}
	next, sink := newTestEvents(t)
	next.RestoreEnded(append(ended, EndedID{ID: "long-ago", At: evNow.Add(-time.Hour)}))
	for id, dup := range map[string]bool{"open": true, "done": true, "long-ago": false} {
		span := `{"id":"` + id + `","upstream":"tgi","start":"` + ts(-3*time.Second) + `","end":"` + ts(0) + `"}`
		status, ans := post(t, next, span)
		if got := ans["duplicates"] == 1.0; status != 202 || got != dup {
			t.Errorf("%s after the restart: %d %v, want duplicate %v", id, status, ans, dup)
		}
	}
	if len(sink.spans) != 1 || sink.spans[0].ID != "long-ago" {
		t.Errorf("recorded %v, want only long-ago", sink.spans)
	}
}

// TestEventBounds: what the event API takes is what the sink can write. A
// span naming 100,000 GPUs is refused, not charged; a GPU named twice (or
// by index and by a name the device map gives the same id) is charged
// once; and an event with every string at its longest and every count at
// its largest encodes as a record within InfluxDB's limits.
func TestEventBounds(t *testing.T) {
	sink := &eventSink{}
	e, err := NewEvents(EventOptions{History: 15 * time.Minute, Devices: testDevices, TenantSecret: testSecret, TenantRaw: true,
		Now: func() time.Time { return evNow }}, sink)
	if err != nil {
		t.Fatal(err)
	}
	span := func(id, extra string) string {
		return `{"id":"` + id + `","upstream":"tgi","start":"` + ts(-2*time.Second) + `","end":"` + ts(-time.Second) + `"` + extra + `}`
	}
	zeros := strings.TrimSuffix(strings.Repeat("0,", 100_000), ",")
	if status, ans := post(t, e, span("many", `,"gpus":[`+zeros+`]`)); status != 422 && status != 413 || len(sink.calls) != 0 {
		t.Errorf("100,000 GPUs: %d %v, want 413 or 422 and nothing recorded", status, ans)
	}
	if status, ans := post(t, e, span("twice", `,"gpus":[0,1,0,"0","1"]`)); status != 202 {
		t.Fatalf("GPUs named twice: %d %v, want 202", status, ans)
	}
	if got := sink.spans[0].Devices; !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("devices %v, want each once: [0 1]", got)
	}

	long := span(strings.Repeat("i", maxRequestID), `,"model":"`+strings.Repeat("\u00e9", maxModel/2)+`","tenant":"`+strings.Repeat("t", maxTenant)+
		`","prompt_tokens":1099511627776,"completion_tokens":1099511627776,"cached_tokens":1099511627776,"reasoning_tokens":1099511627776`)
	long = strings.Replace(long, `"tgi"`, `"`+strings.Repeat("u", maxUpstream)+`"`, 1)
	e.opts.Devices = func(string, []string) ([]string, error) { return []string{"0"}, nil }
	if status, ans := post(t, e, long); status != 202 {
		t.Fatalf("an event at every bound: %d %v, want 202", status, ans)
	}
	s := sink.spans[1]
	r := schematest.Record()
	r.ID, r.Upstream, r.Model, r.Tenant = s.ID, s.Upstream, s.Model, s.Tenant
	r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.ReasoningTokens = s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.ReasoningTokens
	p, err := schema.RequestPoint(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Line(p); err != nil {
		t.Errorf("the record of an event at every bound does not encode: %v", err)
	}
}
