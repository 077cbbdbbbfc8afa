package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// fleetRun is a real InfluxDB filled by two simulated nodes running the
// daemon in-process, as a small fleet would fill it: what the dashboards
// and the report are tested against.
type fleetRun struct {
	influx   *influxtest.Server
	from, to time.Time // every point lies inside
	cfgPath  string    // a config file naming the InfluxDB, for `report`
	// synthesised lists the fields and measurements that the daemon does
	// not write yet (planned in parallel work, SCHEMA-PLAN) and that
	// fillPlannedFields added, derived from the real records.
	synthesised []string
}

type fleetNode struct {
	name, simulate string
	upstreams      []fleetUpstream
}

type fleetUpstream struct {
	name, model string
	gpus        string
	fake        *fakeupstream.Server
}

// runFleet runs two nodes (4 simulated H100s with two upstreams, one of
// them tensor-parallel on two GPUs; 2 simulated A100s with one), sends
// requests from three tenants and one client without an API key, stops
// the daemons so that everything is flushed, and adds the planned fields.
func runFleet(t *testing.T) *fleetRun {
	t.Helper()
	influx := influxtest.Start(t)
	run := &fleetRun{influx: influx, from: time.Now().Add(-time.Minute)}
	nodes := []*fleetNode{
		{name: "gpu-a", simulate: "h100:4", upstreams: []fleetUpstream{
			{name: "vllm-70b", model: "meta-llama/Llama-3.1-70B-Instruct", gpus: "[0, 1]"},
			{name: "vllm-8b", model: "meta-llama/Llama-3.1-8B-Instruct", gpus: "[2]"},
		}},
		{name: "gpu-b", simulate: "a100:2", upstreams: []fleetUpstream{
			{name: "vllm-mistral", model: "mistralai/Mistral-7B-Instruct-v0.3", gpus: "[0]"},
		}},
	}
	daemons := make([]*testDaemon, len(nodes))
	for i, n := range nodes {
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "node: %s\ngpu:\n  interval: 50ms\n  report_interval: 1s\nadmin:\n  listen: \"\"\n", n.name)
		fmt.Fprintf(&cfg, "influx:\n  url: %s\n  bucket: %s\n  flush_interval: 100ms\nspool:\n  dir: %s\n", influx.URL(), influx.Bucket(), t.TempDir())
		fmt.Fprintf(&cfg, "models:\n")
		for _, u := range n.upstreams {
			fmt.Fprintf(&cfg, "  - name: %s\n    training_cost: 2.0e7\n    training_co2e_kg: 2.0e6\n    lifetime_tokens: 1.0e13\n    human_labour_hours: 5.0e5\n", u.model)
		}
		fmt.Fprintf(&cfg, "upstreams:\n")
		for j := range n.upstreams {
			u := &n.upstreams[j]
			var err error
			u.fake, err = fakeupstream.Start(context.Background(), fakeupstream.Options{TokenDelay: time.Millisecond, DefaultMaxTokens: 24, Models: []string{u.model}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { u.fake.Close() })
			fmt.Fprintf(&cfg, "  - name: %s\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: %s\n", u.name, u.fake.URL(), u.gpus)
		}
		daemons[i] = startDaemon(t, cfg.String(), n.simulate)
	}

	loadStart := time.Now()
	var wg sync.WaitGroup
	for i, n := range nodes {
		for k := 0; k < 24; k++ {
			u := n.upstreams[k%len(n.upstreams)]
			url := daemons[i].proxyURL(u.name)
			wg.Go(func() {
				// Three tenants, and every eighth request without an API key.
				key := fmt.Sprintf("sk-fleet-tenant-%d", k%3)
				if k%8 == 7 {
					key = ""
				}
				fleetCall(t, url, u.model, key, fmt.Sprintf("%s-%02d", n.name, k), k%2 == 0, 4+k*5%40)
			})
		}
	}
	wg.Wait()
	// Let telemetry and idle windows close with some load in them: on
	// every node a deadlabour_gpu window (stamped with its start) that ends
	// after the load began, and an idle share (stamped with its end) that
	// ends after it, written while the daemon runs.
	for _, n := range nodes {
		host := "host = " + influxtest.QuoteString(n.name)
		gpuAfter := fmt.Sprintf("%s AND time > %d", host, loadStart.Add(-time.Second).UnixNano())
		idleAfter := fmt.Sprintf("%s AND time > %d", host, loadStart.UnixNano())
		testutil.WaitFor(t, n.name+"'s windows with load in them", 15*time.Second, func() bool {
			return influx.Count(t, schema.MeasurementGPU, gpuAfter) > 0 && influx.Count(t, schema.MeasurementIdle, idleAfter) > 0
		})
	}
	for _, d := range daemons {
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
	}
	run.to = time.Now().Add(time.Minute)
	if got := influx.Count(t, schema.MeasurementRequest, ""); got != 48 {
		t.Fatalf("%d request records, want 48", got)
	}

	run.cfgPath = filepath.Join(t.TempDir(), "report.yaml")
	cfg := fmt.Sprintf("influx:\n  url: %s\n  bucket: %s\nspool:\n  dir: %s\n", influx.URL(), influx.Bucket(), t.TempDir())
	if err := os.WriteFile(run.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run.synthesised = fillPlannedFields(t, influx)
	if len(run.synthesised) > 0 {
		t.Logf("not written by the daemon yet, synthesised from its records: %s", strings.Join(run.synthesised, ", "))
	}
	return run
}

func fleetCall(t *testing.T, url, model, key, id string, stream bool, maxTokens int) {
	req := map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": strings.Repeat("why ", 3+maxTokens%17)}},
		"max_tokens": maxTokens,
	}
	if stream {
		req["stream"] = true
		req["stream_options"] = map[string]any{"include_usage": true}
	}
	body, _ := json.Marshal(req)
	r, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Request-Id", id)
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Error(err)
		return
	}
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: status %d: %s", id, resp.StatusCode, buf.String())
	}
}

// fieldKeys lists the fields InfluxDB has seen in a measurement.
func fieldKeys(t *testing.T, influx *influxtest.Server, measurement string) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	for _, r := range influx.Rows(t, "SHOW FIELD KEYS FROM "+influxtest.QuoteIdent(measurement)) {
		if k, ok := r.String("fieldKey"); ok {
			keys[k] = true
		}
	}
	return keys
}

// plannedRequestFields are the deadlabour_request fields that SCHEMA-PLAN
// adds in parallel work (issue 5), each derived here from a real record
// the way the plan defines it, for records that lack them. uplift is a
// fixed idle/active ratio; the water split uses the default WUE (0.5 L/kWh
// of IT energy) and off-site water (3.9 L/kWh of facility energy).
var plannedRequestFields = []struct {
	field string
	value func(r influxtest.Row) any
}{
	{"idle_uplift", func(influxtest.Row) any { return plannedUplift }},
	{"loaded_gpu_energy_j", loaded("gpu_energy_j")},
	{"loaded_it_energy_j", loaded("it_energy_j")},
	{"loaded_facility_energy_j", loaded("facility_energy_j")},
	{"loaded_co2e_g", loaded("co2e_g")},
	{"loaded_energy_cost", loaded("energy_cost")},
	{"loaded_depreciation_cost", loaded("depreciation_cost")},
	{"loaded_dead_labour_cost", func(r influxtest.Row) any {
		return num(r, "energy_cost")*(1+plannedUplift) + num(r, "depreciation_cost")*(1+plannedUplift) + num(r, "training_cost")
	}},
	{"water_onsite_l", func(r influxtest.Row) any { return num(r, "it_energy_j") / 3.6e6 * 0.5 }},
	{"water_offsite_l", func(r influxtest.Row) any { return num(r, "facility_energy_j") / 3.6e6 * 3.9 }},
	{"training_co2e_g", func(r influxtest.Row) any { return tokens(r) * 2.0e9 / 1.0e13 }},
	{"living_labour_s", func(r influxtest.Row) any { return tokens(r) * 5.0e5 * 3600 / 1.0e13 }},
	{"weighting", func(influxtest.Row) any { return "time" }},
}

const plannedUplift = 0.375

func loaded(field string) func(influxtest.Row) any {
	return func(r influxtest.Row) any { return num(r, field) * (1 + plannedUplift) }
}

func num(r influxtest.Row, col string) float64 {
	f, _ := r.Float(col)
	return f
}

func tokens(r influxtest.Row) float64 { return num(r, "prompt_tokens") + num(r, "completion_tokens") }

// fillPlannedFields adds, where the daemon does not write them yet, the
// planned request fields to every real record (a point with the same series
// and time: InfluxDB merges the fields) and a deadlabour_health point per
// node per second over its telemetry. It returns what it added; once the
// parallel work lands it adds nothing and the real fields are tested.
func fillPlannedFields(t *testing.T, influx *influxtest.Server) []string {
	t.Helper()
	var added []string
	have := fieldKeys(t, influx, schema.MeasurementRequest)
	var missing []int
	for i, f := range plannedRequestFields {
		if !have[f.field] {
			missing = append(missing, i)
			added = append(added, schema.MeasurementRequest+"."+f.field)
		}
	}
	var lines bytes.Buffer
	if len(missing) > 0 {
		for _, sp := range storedPoints(t, influx, schema.MeasurementRequest) {
			p := sp.point
			for _, i := range missing {
				p.Fields = append(p.Fields, schema.Field{Key: plannedRequestFields[i].field, Value: plannedRequestFields[i].value(sp.row)})
			}
			testutil.AppendLine(t, &lines, p)
		}
	}
	if len(fieldKeys(t, influx, "deadlabour_health")) == 0 {
		added = append(added, "deadlabour_health")
		for _, r := range influx.Rows(t, `SELECT count("energy_j") AS n FROM "deadlabour_gpu" GROUP BY time(1s), "host" fill(none)`) {
			host, _ := r.String("host")
			at, _ := r.Time()
			gpus, _ := r.Int("n")
			k := at.Unix() % 7
			testutil.AppendLine(t, &lines, schema.Point{Measurement: "deadlabour_health", Tags: []schema.Tag{{Key: "host", Value: host}}, Time: at,
				Fields: []schema.Field{{Key: "gpus_total", Value: gpus}, {Key: "gpus_unhealthy", Value: int64(0)},
					{Key: "host_meter", Value: "modelled"}, {Key: "spool_points", Value: k * 10}, {Key: "spool_bytes", Value: k * 4000},
					{Key: "oldest_undelivered_s", Value: float64(k) / 10}, {Key: "points_sent", Value: at.Unix() * 40},
					{Key: "points_dropped", Value: int64(0)}, {Key: "points_dead_lettered", Value: int64(0)},
					{Key: "sink_state", Value: "ok"}, {Key: "simulated", Value: true}}})
		}
	}
	if lines.Len() > 0 {
		influx.Write(t, lines.String())
	}
	sort.Strings(added)
	return added
}

// storedPoint is one point read back from InfluxDB: its row, and a Point
// with its measurement, tags and time (no fields).
type storedPoint struct {
	row   influxtest.Row
	point schema.Point
}

func storedPoints(t *testing.T, influx *influxtest.Server, measurement string) []storedPoint {
	t.Helper()
	var tagKeys []string
	for _, r := range influx.Rows(t, "SHOW TAG KEYS FROM "+influxtest.QuoteIdent(measurement)) {
		k, _ := r.String("tagKey")
		tagKeys = append(tagKeys, k)
	}
	var out []storedPoint
	for _, r := range influx.Rows(t, "SELECT * FROM "+influxtest.QuoteIdent(measurement)) {
		p := schema.Point{Measurement: measurement}
		p.Time, _ = r.Time()
		for _, k := range tagKeys {
			if v, ok := r.String(k); ok {
				p.Tags = append(p.Tags, schema.Tag{Key: k, Value: v})
			}
		}
		out = append(out, storedPoint{row: r, point: p})
	}
	return out
}

// exportLineProtocol writes a measurement back out as line protocol, with
// every field in its stored type.
func exportLineProtocol(t *testing.T, influx *influxtest.Server, measurement string) string {
	t.Helper()
	types := map[string]string{}
	for _, r := range influx.Rows(t, "SHOW FIELD KEYS FROM "+influxtest.QuoteIdent(measurement)) {
		k, _ := r.String("fieldKey")
		types[k], _ = r.String("fieldType")
	}
	var b bytes.Buffer
	for _, sp := range storedPoints(t, influx, measurement) {
		p := sp.point
		for k, typ := range types {
			var v any
			var ok bool
			switch typ {
			case "float":
				v, ok = sp.row.Float(k)
			case "integer":
				v, ok = sp.row.Int(k)
			case "string":
				v, ok = sp.row.String(k)
			case "boolean":
				v, ok = sp.row.Bool(k)
			}
			if ok {
				p.Fields = append(p.Fields, schema.Field{Key: k, Value: v})
			}
		}
		testutil.AppendLine(t, &b, p)
	}
	return b.String()
}
