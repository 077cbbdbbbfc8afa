package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Outside systemd nothing is sent and nothing is logged.
func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	var logs strings.Builder
	n := newNotifier(slog.New(slog.NewTextHandler(&logs, nil)))
	n.ready("x")
	n.alive(time.Now())
	n.stopping("x")
	if n.every != 0 || logs.Len() != 0 {
		t.Errorf("ping period %v, log %q: want none outside systemd", n.every, logs.String())
	}
}
