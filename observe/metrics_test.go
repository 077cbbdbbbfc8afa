package observe

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// freshObserver is an observer as the daemon makes it at start, over a
// real sink (no InfluxDB), two GPUs, a host meter, two configured models
// and two upstreams, with nothing metered yet.
func freshObserver(t *testing.T) *Observer {
	t.Helper()
	w, err := sink.NewWriter(sink.Options{Dir: t.TempDir(), MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close(context.Background()) })
	now := time.Unix(1000, 0)
	o := New(Options{
		Node: "n", Interval: time.Second, ReportInterval: 10 * time.Second, Now: func() time.Time { return now },
		GPUs: []string{"0", "1"}, GPUHealth: func() []gpu.DeviceHealth { return nil }, HostMeter: "counter",
		Sink: w, SinkMetrics: w.Collector(), Ready: func() bool { return true }, SpoolLimit: 1 << 20,
		Schema: schema.NewRequestSchema([]string{"llama-70b", "llama-8b"}, "EUR"), Models: []string{"llama-70b", "llama-8b"},
		Upstreams: []string{"vllm-a", "vllm-b"},
		Meters:    map[string]estimator.Method{"0": estimator.MethodCounter, "1": estimator.MethodCounter, "host": estimator.MethodCounter},
	})
	o.BodyBudget(requests.NewBodyBudget(1<<20, time.Second))
	return o
}

// scrape GETs /metrics as Prometheus does, in the text format.
func scrape(t *testing.T, o *Observer) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	mux := http.NewServeMux()
	o.RegisterProbes(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return body, mfs
}

// documentedMetrics is every metric name in docs/operations.md's /metrics
// table, with its type.
func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(doc, []byte("**`GET /metrics`**"))
	end := bytes.Index(doc, []byte("Useful alerts:"))
	if start < 0 || end < start {
		t.Fatal("docs/operations.md has no /metrics table ahead of \"Useful alerts:\"")
	}
	doc = doc[start:end]
	row := regexp.MustCompile("^\\| (`deadlabour_[^|]*) \\| (counter|gauge|histogram) \\|")
	name := regexp.MustCompile("`(deadlabour_\\w+)`")
	out := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			out[n[1]] = m[2]
		}
	}
	if len(out) < 30 {
		t.Fatalf("found %d metrics in docs/operations.md's table; has its layout changed?", len(out))
	}
	return out
}

// Every counter the operations guide lists is exported by a freshly
// started daemon, at 0, so that rate() and increase() see the first
// event; every other metric it lists is exported too, but the GPU gauges
// read at the first poll. The sustainability counters are there for every
// configured model and upstream, and the idle ones for every meter.
func TestFreshObserverExportsEveryDocumentedMetric(t *testing.T) {
	o := freshObserver(t)
	_, mfs := scrape(t, o)
	afterPoll := map[string]bool{"deadlabour_gpu_power_watts": true, "deadlabour_gpu_utilization_ratio": true,
		"deadlabour_gpu_memory_utilization_ratio": true}
	for name, typ := range documentedMetrics(t) {
		mf, ok := mfs[name]
		if afterPoll[name] {
			continue
		}
		if !ok || len(mf.GetMetric()) == 0 {
			t.Errorf("%s (%s, documented) is not exported at start", name, typ)
			continue
		}
		if want := strings.ToUpper(typ); mf.GetType().String() != want {
			t.Errorf("%s is a %s, documented as a %s", name, mf.GetType(), typ)
		}
		if typ != "counter" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %v at start, want 0", name, m.GetLabel(), v)
			}
		}
	}

	series := func(name string) map[string]bool {
		out := map[string]bool{}
		for _, m := range mfs[name].GetMetric() {
			var kv []string
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(kv, ",")] = true
		}
		return out
	}
	for _, name := range []string{"deadlabour_request_energy_joules_total", "deadlabour_request_co2e_grams_total", "deadlabour_request_water_litres_total"} {
		if got := series(name); len(got) != 4 || !got["model=llama-8b,upstream=vllm-b"] {
			t.Errorf("%s series %v, want the 2 models x 2 upstreams", name, got)
		}
	}
	if got := series("deadlabour_request_cost_total"); len(got) != 4 || !got["currency=EUR,model=llama-70b,upstream=vllm-a"] {
		t.Errorf("deadlabour_request_cost_total series %v, want 4 in EUR", got)
	}
	if got := series("deadlabour_idle_energy_joules_total"); len(got) != 3 || !got["device=host"] || !got["device=1"] {
		t.Errorf("deadlabour_idle_energy_joules_total series %v, want GPUs 0, 1 and host", got)
	}
	if got := series("deadlabour_sink_write_retries_total"); !got["reason=network"] || !got["reason=503"] {
		t.Errorf("deadlabour_sink_write_retries_total series %v, want network and the retried statuses", got)
	}
	bi := mfs["deadlabour_build_info"].GetMetric()
	if len(bi) != 1 || bi[0].GetGauge().GetValue() != 1 || len(bi[0].GetLabel()) != 3 {
		t.Errorf("deadlabour_build_info %v, want one series at 1 with version, revision, goversion", bi)
	}
}

// The operations guide documents every deadlabour_ metric a running
// daemon exports.
func TestEveryExportedMetricIsDocumented(t *testing.T) {
	o := freshObserver(t)
	o.Polled(time.Unix(1000, 0), time.Millisecond, nil, []estimator.DeviceSample{{Device: "0", PowerW: 300}}, nil)
	_, mfs := scrape(t, o)
	doc := documentedMetrics(t)
	for name := range mfs {
		if strings.HasPrefix(name, "deadlabour_") && doc[name] == "" {
			t.Errorf("%s is exported but not in docs/operations.md's metrics table", name)
		}
	}
}

// Records and idle shares add to the sustainability counters, by model
// (an unconfigured one as other) and upstream, and by device.
func TestSustainabilityCounters(t *testing.T) {
	o := freshObserver(t)
	r := estimator.Record{Span: estimator.Span{Upstream: "vllm-a", Model: "llama-70b", Status: "200"},
		ITEnergyJ: 100, CO2eG: 2, WaterL: 0.5, DeadLabourCost: 0.01}
	o.Recorded(r)
	o.Recorded(r)
	r.Model, r.ITEnergyJ = "mystery", -1 // unconfigured; an impossible figure is left out
	o.Recorded(r)
	o.Idled(estimator.IdleShare{Device: "host", Joules: 30, StaticJoules: 20, DepreciationCost: 0.002, EmbodiedCO2eG: 0.1})
	_, mfs := scrape(t, o)
	value := func(name string, labels ...string) float64 {
		for _, m := range mfs[name].GetMetric() {
			var kv []string
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			if strings.Join(kv, ",") == strings.Join(labels, ",") {
				return m.GetCounter().GetValue()
			}
		}
		t.Errorf("%s{%s} not exported", name, strings.Join(labels, ","))
		return -1
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"deadlabour_request_energy_joules_total", []string{"model=llama-70b", "upstream=vllm-a"}, 200},
		{"deadlabour_request_co2e_grams_total", []string{"model=llama-70b", "upstream=vllm-a"}, 4},
		{"deadlabour_request_water_litres_total", []string{"model=llama-70b", "upstream=vllm-a"}, 1},
		{"deadlabour_request_cost_total", []string{"currency=EUR", "model=llama-70b", "upstream=vllm-a"}, 0.02},
		{"deadlabour_request_energy_joules_total", []string{"model=llama-8b", "upstream=vllm-a"}, 0},
		{"deadlabour_request_co2e_grams_total", []string{"model=other", "upstream=vllm-a"}, 2},
		{"deadlabour_idle_energy_joules_total", []string{"device=host"}, 50},
		{"deadlabour_idle_depreciation_cost_total", []string{"currency=EUR", "device=host"}, 0.002},
		{"deadlabour_idle_embodied_co2e_grams_total", []string{"device=host"}, 0.1},
		{"deadlabour_requests_total", []string{"status=200", "upstream=vllm-a"}, 3},
	} {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, strings.Join(c.labels, ","), got, c.want)
		}
	}
	if _, ok := mfs["deadlabour_request_energy_joules_total"]; ok {
		for _, m := range mfs["deadlabour_request_energy_joules_total"].GetMetric() {
			if m.GetLabel()[0].GetValue() == "other" {
				t.Errorf("an impossible energy made a series: %v", m)
			}
		}
	}
}

// promtool, where installed, finds nothing to complain of in a scrape
// (apt-get install prometheus, or the release tarball, has it).
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (apt-get install prometheus): the scrape is not linted")
	}
	o := freshObserver(t)
	o.Recorded(estimator.Record{Span: estimator.Span{Upstream: "vllm-a", Model: "llama-70b", Status: "200"}, ITEnergyJ: 1})
	body, _ := scrape(t, o)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
