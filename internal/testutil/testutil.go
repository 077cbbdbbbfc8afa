// Package testutil holds the helpers the tests of several packages share:
// tolerances, waiting, loggers, HTTP calls and Prometheus text.
package testutil

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
	"github.com/deadlabour/deadlabour/params"
	"github.com/deadlabour/deadlabour/schema"
)

// Near is basic.Near: a and b agree to 1e-9, relative to the larger of
// them, or absolute below 1.
func Near(a, b float64) bool { return basic.Near(a, b) }

// CloseTo compares two sums to a relative 1e-9 (the order of float
// additions may differ).
func CloseTo(got, want float64) bool {
	return math.Abs(got-want) <= 1e-9*math.Max(math.Abs(want), 1e-300)
}

// WaitFor is basic.WaitFor: it polls cond every 20 ms until it holds,
// failing the test after timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	basic.WaitFor(t, what, timeout, cond)
}

// Discard is basic.Discard, a logger that writes nothing.
func Discard() *slog.Logger { return basic.Discard() }

// LogWriter writes log lines to the test's log under go test -v, and
// nowhere otherwise.
func LogWriter(t testing.TB) io.Writer { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Do sends req and returns the status and the whole answer.
func Do(t testing.TB, c *http.Client, req *http.Request) (int, []byte) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// GetJSON fetches url and decodes its JSON body.
func GetJSON(t testing.TB, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode, body
}

// ParseMetrics parses the Prometheus text of r into "name{k=v,...}" ->
// value, labels sorted; histograms as name_count and name_sum.
func ParseMetrics(t testing.TB, r io.Reader) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := name
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[strings.Replace(key, name, name+"_count", 1)] = float64(m.GetHistogram().GetSampleCount())
				out[strings.Replace(key, name, name+"_sum", 1)] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

// Scrape is GET url/metrics, parsed (ParseMetrics).
func Scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return ParseMetrics(t, resp.Body)
}

// AppendLine appends p's line protocol and a newline to b.
func AppendLine(t testing.TB, b *bytes.Buffer, p schema.Point) {
	t.Helper()
	line, err := schema.Line(p)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(line)
	b.WriteByte('\n')
}

// H100Ledger is the ledger the daemon would build from cfg on a node with
// one H100 (GPU 0) and the host meter.
func H100Ledger(t testing.TB, cfg *config.Config) (*estimator.Ledger, []params.Source) {
	t.Helper()
	p, sources, err := params.Build(cfg, []gpu.DeviceInfo{{ID: "0", Name: "NVIDIA H100 80GB HBM3"}}, false, Discard())
	if err != nil {
		t.Fatal(err)
	}
	l, err := estimator.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return l, sources
}
