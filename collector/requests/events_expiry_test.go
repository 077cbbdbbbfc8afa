package requests

import (
	"fmt"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// openEvents is an event API with n requests begun, the i-th at
// evNow - (n - i)·step, none ended.
func openEvents(tb testing.TB, n int, step time.Duration) (*Events, *eventSink) {
	tb.Helper()
	sink := &eventSink{}
	e, err := NewEvents(EventOptions{History: 15 * time.Minute, SettleDelay: time.Hour, Devices: testDevices,
		TenantSecret: testSecret, MaxOpen: 2 * n, Now: func() time.Time { return evNow }}, sink)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		ev := event{kind: "begin", span: estimator.Span{ID: fmt.Sprintf("o%06d", i), Upstream: "tgi",
			Start: evNow.Add(time.Duration(i-n) * step)}}
		if _, ferr := e.apply([]event{ev}, evNow, false); ferr != nil {
			tb.Fatal(ferr)
		}
	}
	return e, sink
}

// TestExpireOnlyExpired: Expire ends, as abandoned, exactly the requests
// begun more than the history ago and still open, oldest first; an ended
// one is not ended again, and later ticks end the next as they age.
func TestExpireOnlyExpired(t *testing.T) {
	e, sink := openEvents(t, 100, time.Second)
	// o000000 began 100 s before evNow; end o000001 before it expires.
	end := event{kind: "end", span: estimator.Span{ID: "o000001", Upstream: "tgi", End: evNow}}
	if _, ferr := e.apply([]event{end}, evNow, false); ferr != nil {
		t.Fatal(ferr)
	}
	sink.calls = nil
	// At evNow + 15m - 97s, the requests begun 100, 99 and 98 s before
	// evNow are past the history (15m); 97 s is exactly at it, and stays.
	e.Expire(evNow.Add(15*time.Minute - 97*time.Second))
	if got, want := fmt.Sprint(sink.calls), "[end o000000 end o000002]"; got != want {
		t.Errorf("first tick ended %s, want %s", got, want)
	}
	if e.Open() != 97 {
		t.Errorf("%d open after the tick, want 97", e.Open())
	}
	sink.calls = nil
	e.Expire(evNow.Add(15*time.Minute + time.Hour))
	if len(sink.calls) != 97 || e.Open() != 0 {
		t.Errorf("the last tick ended %d, %d left open; want 97 and 0", len(sink.calls), e.Open())
	}
	for _, sp := range sink.spans[len(sink.spans)-97:] {
		if sp.Status != estimator.StatusAbandoned {
			t.Fatalf("%s ended with status %q, want abandoned", sp.ID, sp.Status)
		}
	}
}

// TestExpireHeapStaysBounded: requests begun and ended again and again do
// not grow what Expire keeps beyond a multiple of those still open.
func TestExpireHeapStaysBounded(t *testing.T) {
	e, _ := openEvents(t, 10, time.Second)
	for i := range 20000 {
		id := fmt.Sprintf("c%06d", i)
		evs := []event{{kind: "begin", span: estimator.Span{ID: id, Upstream: "tgi", Start: evNow}},
			{kind: "end", span: estimator.Span{ID: id, Upstream: "tgi", End: evNow}}}
		if _, ferr := e.apply(evs, evNow, true); ferr != nil {
			t.Fatal(ferr)
		}
	}
	if n := len(e.starts); n > 2*e.Open()+expiryCompactSlack {
		t.Errorf("%d begins kept for Expire with %d open", n, e.Open())
	}
}

// BenchmarkExpireTick10kOpen is one expiry tick (once a second) with
// 10,000 requests begun in the last 10 s and none due: its cost must not
// grow with the requests open.
func BenchmarkExpireTick10kOpen(b *testing.B) {
	e, _ := openEvents(b, 10000, time.Millisecond)
	b.ResetTimer()
	for b.Loop() {
		e.Expire(evNow)
	}
}
