package probe

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/estimator"
)

// gpuMeasure is one GPU's energy over a `probe --measure` run, two ways.
type gpuMeasure struct {
	polls    int     // polls that closed an interval of this GPU
	counterJ float64 // counter intervals after the first
	other    int     // intervals not from the counter
	from, to time.Time
	samples  []powerSample
}

type powerSample struct {
	t time.Time
	w float64
}

// Measure polls every GPU every `every` for d (or until ctx is done)
// and prints, per GPU, the energy its counter showed and the trapezoid of
// its power samples over the same span, and how far apart they are: the
// real-GPU check of docs/real-gpu.md. The span runs from the first counter
// increment after the start to the last one, so that the counter's lag
// (one update, 20-100 ms) is at both ends alike.
func Measure(ctx context.Context, c *gpu.Collector, d, every time.Duration, w io.Writer) error {
	per := map[string]*gpuMeasure{}
	for _, dev := range c.Devices() {
		per[dev.ID] = &gpuMeasure{}
	}
	fmt.Fprintf(w, "Measuring for %v, a poll every %v ...\n", d, every)
	tick := time.NewTicker(every)
	defer tick.Stop()
	done := time.NewTimer(d)
	defer done.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(w, "interrupted: what was measured so far")
			break loop
		case <-done.C:
			break loop
		case <-tick.C:
		}
		ivs, samples := c.Poll(time.Now())
		per = addMeasures(per, ivs, samples)
	}
	return printMeasures(w, c.Devices(), per)
}

// addMeasures folds one poll into the measures. A GPU in MIG mode closes
// one interval for the board and one per instance over the same span:
// together they are the board's energy.
func addMeasures(per map[string]*gpuMeasure, ivs []estimator.Interval, samples []estimator.DeviceSample) map[string]*gpuMeasure {
	closed := map[string]bool{}
	for _, iv := range ivs {
		board, _, _ := strings.Cut(iv.Device, "/")
		m := per[board]
		if m == nil {
			continue
		}
		if !closed[board] {
			closed[board] = true
			m.polls++
		}
		if iv.Method != estimator.MethodCounter {
			m.other++
			continue
		}
		if m.polls == 1 {
			continue // the first interval starts at Open, not at an increment
		}
		if m.from.IsZero() {
			m.from = iv.Start
		}
		m.to = iv.End
		m.counterJ += iv.Joules
	}
	for _, s := range samples {
		if m := per[s.Device]; m != nil && !math.IsNaN(s.PowerW) {
			m.samples = append(m.samples, powerSample{s.Time, s.PowerW})
		}
	}
	return per
}

func printMeasures(w io.Writer, devs []gpu.DeviceInfo, per map[string]*gpuMeasure) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GPU\tSECONDS\tCOUNTER J\tPOWER INTEGRAL J\tMEAN W\tPOWER READING\tDIFFERENCE\tAGREEMENT\t")
	worst, n := 100.0, 0
	for _, dev := range devs {
		m := per[dev.ID]
		power := trapezoidOver(m.samples, m.from, m.to)
		span := m.to.Sub(m.from).Seconds()
		if m.other > 0 || span <= 0 || m.counterJ <= 0 || math.IsNaN(power) {
			fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t-\t%s\t-\tn/a\t\n", dev.ID, span, fmtJ(m.counterJ, m.other == 0 && span > 0), fmtJ(power, !math.IsNaN(power)), dev.Power)
			continue
		}
		diff := (power - m.counterJ) / m.counterJ * 100
		agree := 100 - math.Abs(diff)
		worst, n = min(worst, agree), n+1
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%+.2f %%\t%.2f %%\t\n", dev.ID, span, m.counterJ, power, m.counterJ/span, dev.Power, diff, agree)
	}
	tw.Flush()
	if n == 0 {
		fmt.Fprintln(w, "no GPU had both a counter and power samples to compare")
		return nil
	}
	fmt.Fprintf(w, "worst agreement: %.2f %% over %d GPU(s) (counter energy against the trapezoid of power samples)\n", worst, n)
	return nil
}

func fmtJ(j float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", j)
}

// trapezoidOver integrates samples (in time order) over [from, to]; NaN
// without two samples in it.
func trapezoidOver(s []powerSample, from, to time.Time) float64 {
	j, n := 0.0, 0
	var prev powerSample
	for _, p := range s {
		if p.t.Before(from) || p.t.After(to) {
			continue
		}
		if n > 0 {
			j += gpu.Trapezoid(prev.w, p.w, p.t.Sub(prev.t))
		}
		prev, n = p, n+1
	}
	if n < 2 {
		return math.NaN()
	}
	return j
}
