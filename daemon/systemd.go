package daemon

import (
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's notify protocol (systemd/deadlabourd.service is
// Type=notify): READY=1 once everything is up, WATCHDOG=1 from the poll
// loop, STOPPING=1 at shutdown. Outside systemd (no $NOTIFY_SOCKET) every
// call does nothing.
type notifier struct {
	log *slog.Logger
	// every is the watchdog ping period, half of WatchdogSec as systemd
	// advises; 0 without a watchdog.
	every time.Duration
	// last ping; touched only by the goroutine that calls alive (the
	// engine's loop).
	last time.Time
}

func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log}
	timeout, err := sd.SdWatchdogEnabled(false)
	switch {
	case err != nil:
		log.Warn("systemd watchdog settings unreadable; not pinging it", "err", err)
	case timeout > 0:
		n.every = timeout / 2
		log.Info("systemd watchdog enabled", "timeout", timeout, "ping_every", n.every)
	}
	return n
}

// ready tells systemd that start-up is done; status is what
// `systemctl status` shows.
func (n *notifier) ready(status string) {
	n.send(sd.SdNotifyReady + "\nSTATUS=" + status)
}

// stopping tells systemd that shutdown has begun.
func (n *notifier) stopping(status string) {
	n.send(sd.SdNotifyStopping + "\nSTATUS=" + status)
}

// alive pings the watchdog at most once per period. The engine calls it
// after every tick, so a loop stuck in a driver call stops the pings and
// systemd kills and restarts the daemon.
func (n *notifier) alive(now time.Time) {
	if n.every <= 0 || now.Sub(n.last) < n.every {
		return
	}
	n.last = now
	n.send(sd.SdNotifyWatchdog)
}

func (n *notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Warn("systemd notification not sent", "err", err)
	}
}
