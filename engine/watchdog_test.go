package engine

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// stuckGPU is a GPU source whose Poll blocks while the test holds it, like
// an NVML call that never returns.
type stuckGPU struct {
	stuck   atomic.Bool
	entered chan struct{} // a Poll began blocking
	release chan struct{}
}

func (g *stuckGPU) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	if g.stuck.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return nil, nil
}

type discardSink struct{}

func (discardSink) Enqueue(...schema.Point) error { return nil }

// The watchdog is pinged from the poll loop itself: while a poll is stuck
// there are no pings (so systemd kills and restarts the daemon), and they
// resume when it returns. It runs in a synctest bubble: time is the
// bubble's, so "30 ticks with no ping" is 30 ticks of the loop's own
// ticker, not a guess at how long the machine takes.
func TestWatchdogPingsComeFromTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ledger, err := estimator.New(estimator.Params{Node: "n", Weighting: estimator.WeightTime, PUE: 1,
			SettleDelay: 0, History: time.Minute, Devices: map[string]estimator.DeviceParams{}})
		if err != nil {
			t.Fatal(err)
		}
		telemetry, err := NewGPUAggregator(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		gpu := &stuckGPU{entered: make(chan struct{}), release: make(chan struct{})}
		var mu sync.Mutex
		var pings []time.Time
		e := &Engine{Options: Options{
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: 10 * time.Millisecond, Now: time.Now,
			GPU: gpu, Queue: NewSpanQueue(1), Ledger: ledger, Telemetry: telemetry,
			Out: discardSink{}, Node: "n",
			Alive: func(now time.Time) {
				mu.Lock()
				pings = append(pings, time.Now())
				mu.Unlock()
			},
		}, idle: newIdleAggregator(time.Second), warned: map[string]bool{}}
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(pings)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Run(ctx)
		}()
		defer func() {
			cancel()
			<-done
		}()

		testutil.WaitFor(t, "pings from a running loop", 10*time.Second, func() bool { return count() >= 5 })
		gpu.stuck.Store(true)
		<-gpu.entered
		stuckAt := count()
		// 30 ticks of the bubble's clock; Wait returns once every goroutine
		// of the bubble (a pinger on its own ticker would be one) is blocked
		// again, so whatever they would have done in that time is done.
		time.Sleep(30 * e.Interval)
		synctest.Wait()
		if got := count(); got != stuckAt {
			t.Errorf("%d pings while the poll was stuck, want none", got-stuckAt)
		}
		gpu.stuck.Store(false)
		close(gpu.release)
		testutil.WaitFor(t, "pings after the poll returned", 10*time.Second, func() bool { return count() >= stuckAt+5 })
	})
}
