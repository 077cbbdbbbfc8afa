package main

import "context"

// startEvents runs the event API's expiry loop under a context of its own,
// so that it stops when run shuts down, whether ctx ended or a listener
// failed: stop stops it and waits for it.
func (d *daemon) startEvents(ctx context.Context) (stop func()) {
	if d.events == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.events.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}
