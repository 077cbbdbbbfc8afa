package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

func span(id string) estimator.Span {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	return estimator.Span{ID: id, Upstream: "vllm", Model: "m", Start: t0, End: t0.Add(time.Second), Status: "200",
		PromptTokens: 7, CompletionTokens: 11, CachedTokens: -1, ReasoningTokens: -1, UsageSource: estimator.UsageReported,
		Devices: []string{"GPU-a"}, Served: true}
}

// A full queue drops, counted and logged once, and never blocks the proxy.
func TestFullQueueDropsWithoutBlocking(t *testing.T) {
	var logs bytes.Buffer
	f, err := New(Options{URL: "http://127.0.0.1:1", Batch: 10, FlushInterval: time.Hour, MaxQueue: 3,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // Run is not running: nothing takes from the queue
		for i := range 100 {
			f.Begin(span(string(rune('a' + i%26))))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Begin blocked on a full queue")
	}
	if got := f.Stats().Dropped; got != 97 {
		t.Errorf("dropped = %d, want 97", got)
	}
	if n := strings.Count(logs.String(), "queue full"); n != 1 {
		t.Errorf("%d warnings for one run of drops, want 1:\n%s", n, logs.String())
	}
}

// Events go out in the event API's shape, with the bearer token, and a
// failing node daemon is retried.
func TestPostsBeginAndEnd(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	fails := 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v1/requests" || r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("%s %s", r.URL.Path, r.Header.Get("Authorization"))
		}
		if fails > 0 {
			fails--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			t.Error(err)
		}
		got = append(got, batch...)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	f, err := New(Options{URL: srv.URL, Token: []byte("tok"), Batch: 2, FlushInterval: 10 * time.Millisecond, MaxQueue: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	s := span("r1")
	f.Begin(s)
	f.End(s)
	f.End(span("r2"))
	cancel() // the rest is flushed at shutdown
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("got %d events, want 3: %v", len(got), got)
	}
	b, e := got[0], got[1]
	if b["type"] != "begin" || b["id"] != "r1" || b["end"] != nil || b["prompt_tokens"] != nil || b["gpus"].([]any)[0] != "GPU-a" {
		t.Errorf("begin = %v", b)
	}
	if e["type"] != "end" || e["status"] != 200.0 || e["prompt_tokens"] != 7.0 || e["completion_tokens"] != 11.0 ||
		e["cached_tokens"] != nil || e["usage_source"] != "reported" || e["start"] != b["start"] {
		t.Errorf("end = %v", e)
	}
	if st := f.Stats(); st.Sent != 3 || st.Dropped != 0 || st.Refused != 0 {
		t.Errorf("stats = %+v", st)
	}
}
