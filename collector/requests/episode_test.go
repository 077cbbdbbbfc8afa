package requests

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/testlog"
)

// TestEpisodeIntermittent: an upstream that fails every other request is
// one run of failures: one warning, then, once no failure came for the
// quiet period, one info line counting them all.
func TestEpisodeIntermittent(t *testing.T) {
	logs := &testlog.Buffer{}
	e := &episode{log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		warn: "failing", recovered: "answering again", quiet: 10 * time.Second}
	now := time.Unix(1700000000, 0)
	for range 100 {
		e.fail(now, "request_id", "x")
		now = now.Add(time.Second)
		e.ok(now)
		now = now.Add(time.Second)
	}
	if w, i := strings.Count(logs.String(), "level=WARN"), strings.Count(logs.String(), "level=INFO"); w != 1 || i != 0 {
		t.Fatalf("alternating failures: %d warn and %d info lines, want 1 and 0:\n%s", w, i, logs)
	}
	e.ok(now.Add(10 * time.Second)) // the last failure was 11 s ago
	e.ok(now.Add(11 * time.Second))
	if w, i := strings.Count(logs.String(), "level=WARN"), strings.Count(logs.String(), "level=INFO"); w != 1 || i != 1 ||
		!strings.Contains(logs.String(), `msg="answering again" failed_requests=100 `) {
		t.Errorf("after the quiet period: %d warn and %d info lines, want 1 and 1 counting 100:\n%s", w, i, logs)
	}
}
