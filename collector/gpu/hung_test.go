package gpu

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/estimator"
)

// Every reader goroutine the collector starts is stopped by Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pollWithin is poll, failing the test when Poll does not return within
// limit of real time (a hung NVML call holding it). It then lets every
// blocked call go and waits for Poll, so that nothing outlives the test.
func (r *rig) pollWithin(dt, limit time.Duration) []estimator.Interval {
	r.t.Helper()
	r.clk.advance(dt)
	now := r.clk.now()
	type result struct {
		ivs     []estimator.Interval
		samples []estimator.DeviceSample
	}
	done := make(chan result, 1)
	go func() {
		ivs, samples := r.c.Poll(now)
		done <- result{ivs, samples}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(limit):
		for i := range r.c.Devices() {
			r.sim.Device(i).Unblock()
		}
		<-done
		r.t.Fatalf("Poll did not return within %v: one hung GPU stops every GPU's metering", limit)
	}
	for _, iv := range res.ivs {
		r.ivs[iv.Device] = append(r.ivs[iv.Device], iv)
	}
	for _, s := range res.samples {
		r.smp[s.Device] = append(r.smp[s.Device], s)
	}
	return res.ivs
}

// readers counts the collector's reader goroutines.
func readers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "gpu.(*reader).run(")
}

// A GPU whose NVML calls hang (a driver call that never returns after the
// GPU fell off the bus): the poll gives up on it at the deadline, marks it
// unhealthy and starts no second read while the first is stuck; the other
// seven GPUs close an interval at every poll all along. When it answers
// again, its first interval spans the outage: every joule of the trace is
// there, on every GPU.
func TestHungGPU(t *testing.T) {
	tr := Trace{{2 * time.Second, 321}, {time.Hour, 555}}
	r := newRig(t, SimSpec{Kind: "h100", Count: 8}, nil, func(s *Simulation) {
		for i := range 8 {
			s.Device(i).SetTrace(tr)
		}
	})
	hung := r.sim.Device(3)
	t.Cleanup(hung.Unblock) // runs before the rig's Close
	r.polls(10, 100*ms)

	hung.Block()
	for i := range 100 { // 10 s
		ivs := r.pollWithin(100*ms, 10*time.Second)
		now := r.clk.now()
		got := map[string]int{}
		for _, iv := range ivs {
			got[iv.Device]++
			if !iv.End.Equal(now) {
				t.Fatalf("poll %d: interval %+v does not end at the poll", i, iv)
			}
		}
		for _, dev := range []string{"0", "1", "2", "4", "5", "6", "7"} {
			if got[dev] != 1 {
				t.Fatalf("poll %d while GPU 3 hangs: %d intervals of GPU %s, want 1 (the others carry on)", i, got[dev], dev)
			}
		}
		if got["3"] != 0 {
			t.Fatalf("poll %d: an interval of the hung GPU 3", i)
		}
	}
	if n := hung.Blocked(); n != 1 {
		t.Errorf("%d calls stuck on GPU 3, want 1: no second read while the first hangs", n)
	}
	if n := readers(); n != 8 {
		t.Errorf("%d reader goroutines after 100 polls with GPU 3 hung, want 8: a pile-up", n)
	}
	h := r.c.Health()
	if h[3].Healthy || !strings.Contains(h[3].Reason, "did not return") || h[3].NextRetry.IsZero() {
		t.Errorf("GPU 3 health %+v, want unhealthy because its calls did not return, with a retry", h[3])
	}
	if n := r.c.Unhealthy(); n != 1 {
		t.Errorf("%d unhealthy GPUs, want 1", n)
	}
	if n := strings.Count(r.logs.String(), "GPU unhealthy"); n != 1 {
		t.Errorf("%d 'GPU unhealthy' lines, want 1 (failed retries at debug):\n%s", n, r.logs)
	}

	hung.Unblock()
	for i := 0; !r.c.Health()[3].Healthy; i++ {
		if i == 3000 { // 5 min: the retry is at most a minute away
			t.Fatalf("GPU 3 still unhealthy after it answered again: %+v", r.c.Health()[3])
		}
		r.pollWithin(100*ms, 10*time.Second)
	}
	r.polls(20, 100*ms)
	end := r.clk.now()
	for i := range 8 {
		dev := r.c.Devices()[i].ID
		r.contiguous(dev, r.t0, end)
		near(t, "GPU "+dev, r.sum(dev), tr.Energy(end.Sub(r.t0)))
		if m := r.methods(dev); len(m) != 1 || m[estimator.MethodCounter] == 0 {
			t.Errorf("GPU %s: methods %v, want counter intervals only", dev, m)
		}
	}
	if n := strings.Count(r.logs.String(), "GPU healthy again"); n != 1 {
		t.Errorf("%d 'GPU healthy again' lines, want 1:\n%s", n, r.logs)
	}
}

// Close does not wait for ever on a GPU stuck in an NVML call: it gives up
// after the read deadline and says which GPU; the reader ends once the
// call returns.
func TestHungGPUClose(t *testing.T) {
	r := newRig(t, SimSpec{Kind: "h100", Count: 2}, nil, nil)
	hung := r.sim.Device(1)
	t.Cleanup(hung.Unblock)
	r.polls(3, 100*ms)
	hung.Block()
	r.pollWithin(100*ms, 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- r.c.Close() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "GPU 1") {
			t.Errorf("Close with GPU 1 stuck: %v, want an error naming GPU 1", err)
		}
	case <-time.After(10 * time.Second):
		hung.Unblock()
		<-done
		t.Fatal("Close waited for the hung GPU")
	}
	hung.Unblock()
	goleak.VerifyNone(t)
}
