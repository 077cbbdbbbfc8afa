package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestListenerLogThroughSlog: an http.Server's accept failure reaches slog
// as a warning naming the listener (not Go's plain logger on stderr); other
// server messages are debug.
func TestListenerLogThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	l := listenerLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), "upstream up")
	l.Printf("http: Accept error: accept tcp 127.0.0.1:8000: accept4: too many open files; retrying in 5ms")
	l.Printf("http: superfluous response.WriteHeader call")
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, `listener="upstream up"`) || !strings.Contains(out, "too many open files") {
		t.Errorf("accept error logged as %q; want a warning naming the listener and the error", out)
	}
	if strings.Contains(out, "superfluous") {
		t.Errorf("a server message other than an accept error is above debug: %q", out)
	}
}
