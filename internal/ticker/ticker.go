// Package ticker runs a function at a fixed interval until a context ends.
package ticker

import (
	"context"
	"time"
)

// Every calls f every d until ctx is done. The first call is d after the
// start; f runs on the caller's goroutine, and ticks missed while it runs
// are dropped (time.Ticker).
func Every(ctx context.Context, d time.Duration, f func()) {
	EveryOr(ctx, d, nil, f)
}

// EveryOr is Every that also calls f whenever wake receives (a nil wake
// never does).
func EveryOr(ctx context.Context, d time.Duration, wake <-chan struct{}, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		f()
	}
}
