package daemon

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// limitServer sets a listener's timeouts (config listeners) and error log:
// a kept-alive connection idle for listeners.idle_timeout is closed, and
// headers must arrive within listeners.read_header_timeout. The admin
// listener also bounds a whole request's read (admin_read_timeout): event
// posts are small. A proxy does not: its bodies may upload slowly, bounded
// by proxy.body_read_timeout in the proxy itself, and it has no write
// timeout, which would cut long streamed answers.
func (d *Daemon) limitServer(srv *http.Server, name string, admin bool) {
	l := d.cfg.Listeners
	srv.IdleTimeout = l.IdleTimeout.D()
	srv.ReadHeaderTimeout = l.ReadHeaderTimeout.D()
	if admin {
		srv.ReadTimeout = l.AdminReadTimeout.D()
	}
	srv.ErrorLog = listenerLog(d.log, name)
}

// listenerLog is an http.Server's ErrorLog, through slog: a failing
// accept (e.g. "accept4: too many open files", which the server retries)
// is a warning; the rest (a client's malformed request, and the like) is
// debug.
func listenerLog(l *slog.Logger, name string) *log.Logger {
	return log.New(listenerWriter{l, name}, "", 0)
}

type listenerWriter struct {
	log  *slog.Logger
	name string
}

func (w listenerWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "Accept error") {
		w.log.Warn("listener cannot accept connections (out of file descriptors?); retrying", "listener", w.name, "err", msg)
	} else {
		w.log.Debug("listener", "listener", w.name, "err", msg)
	}
	return len(p), nil
}

// drainEvents refuses new event-API posts now and returns a channel closed
// once those in flight have finished, or were cut at ctx's deadline: a post
// whose body is still arriving then has its read ended, so that it is
// answered with an error and not recorded (its client posts again). Run
// waits on it alongside the proxies' drain.
func (d *Daemon) drainEvents(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n := d.eventGate.closeBy(ctx); n > 0 {
			d.log.Warn("event API: posts still arriving at the shutdown deadline are cut and not recorded", "posts", n)
		}
	}()
	return done
}

// cutGrace is how long a post cut at the deadline has to return before
// shutdown goes on without it.
const cutGrace = 2 * time.Second

// closeBy refuses new posts and waits for those in flight until ctx is
// done; then it ends their reads and waits cutGrace more. It returns how
// many were cut.
func (g *eventGate) closeBy(ctx context.Context) (cut int) {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	g.mu.Lock()
	for rc := range g.inflight {
		rc.SetReadDeadline(time.Now())
		cut++
	}
	g.mu.Unlock()
	t := time.NewTimer(cutGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	return cut
}

// enterTracked lets a post through unless the gate is closed, and tracks
// it until leave, so that closeBy can end its read.
func (g *eventGate) enterTracked(w http.ResponseWriter) (leave func(), ok bool) {
	rc := http.NewResponseController(w)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, false
	}
	g.wg.Add(1)
	if g.inflight == nil {
		g.inflight = map[*http.ResponseController]struct{}{}
	}
	g.inflight[rc] = struct{}{}
	return func() {
		g.mu.Lock()
		delete(g.inflight, rc)
		g.mu.Unlock()
		g.wg.Done()
	}, true
}
