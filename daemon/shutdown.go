package daemon

import (
	"context"
	"net/http"
	"sync"

	"github.com/deadlabour/deadlabour/internal/apierror"
)

// eventGate lets event-API posts through until shutdown begins. Closing it
// refuses new posts (503) and waits for those in flight, so that every
// span answered 202 is in the span queue before the engine stops.
type eventGate struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // posts in flight
	// inflight are the posts in flight, whose reads closeBy ends at the
	// shutdown deadline.
	inflight map[*http.ResponseController]struct{}
}

func (g *eventGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leave, ok := g.enterTracked(w)
		if !ok {
			w.Header().Set("Retry-After", "10")
			apierror.Write(w, http.StatusServiceUnavailable, "server_error",
				"deadlabourd is shutting down and no longer records requests: post them again once it is back")
			return
		}
		defer leave()
		h.ServeHTTP(w, r)
	})
}

// close refuses new posts and waits for those in flight, cutting them
// after cutGrace (Run's drainEvents has waited for them already).
func (g *eventGate) close() {
	ctx, cancel := context.WithTimeout(context.Background(), cutGrace)
	defer cancel()
	g.closeBy(ctx)
}

// startEvents runs the event API's expiry loop. stop closes the event API
// (new posts get 503, those in flight finish) and stops the loop: after it,
// nothing reaches the span queue from the event API.
func (d *Daemon) startEvents(ctx context.Context) (stop func()) {
	if d.events == nil {
		return func() {}
	}
	stopRun := startOwned(ctx, d.events.Run)
	return func() {
		d.eventGate.close()
		stopRun()
		d.saveEventsEnded()
	}
}

// startOwned runs f in a goroutine under a context of its own, which ctx
// ending does not end (run decides the order things stop in), and returns
// what stops it: cancel, then wait for f to return.
func startOwned(ctx context.Context, f func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
