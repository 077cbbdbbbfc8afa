package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/report"
	"github.com/deadlabour/deadlabour/schema"
)

// reportCLI runs `deadlabourd report ARGS` and returns its standard output.
func reportCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), append([]string{"report"}, args...), &out, &errb); code != 0 {
		t.Fatalf("report %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

type reportDoc struct {
	By        string           `json:"by"`
	Currency  string           `json:"currency"`
	Simulated bool             `json:"simulated_included"`
	Rows      []map[string]any `json:"rows"`
	Total     map[string]any   `json:"total"`
}

func reportJSONOf(t *testing.T, args ...string) reportDoc {
	t.Helper()
	var doc reportDoc
	dec := json.NewDecoder(strings.NewReader(reportCLI(t, append(args, "--format", "json")...)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// byKey indexes a report's rows by their group.
func (d reportDoc) byKey() map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, r := range d.Rows {
		m[fmt.Sprint(r[d.By])] = r
	}
	return m
}

func jsonFloat(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

// reportedColumns are the columns a report sums, and requests.
func reportedColumns() []string {
	cols := []string{"requests"}
	cols = append(cols, report.Fields()...)
	return cols
}

// directSums are the sums of each column per group, each from its own plain
// InfluxQL query (not the report's), keyed by group and column.
func directSums(t *testing.T, influx *influxtest.Server, tag string) map[string]map[string]float64 {
	t.Helper()
	out := map[string]map[string]float64{}
	for _, col := range reportedColumns() {
		agg := fmt.Sprintf(`sum(%q)`, col)
		if col == "requests" {
			agg = `count("request_id")`
		}
		group := ""
		if tag != "" {
			group = fmt.Sprintf(` GROUP BY %q`, tag)
		}
		for _, r := range influx.Rows(t, fmt.Sprintf(`SELECT %s AS v FROM deadlabour_request%s`, agg, group)) {
			key := ""
			if tag != "" {
				key, _ = r.String(tag)
			}
			if v, ok := r.Float("v"); ok {
				if out[key] == nil {
					out[key] = map[string]float64{}
				}
				out[key][col] = v
			}
		}
	}
	return out
}

// compareReport checks every group and column of a report, and its total,
// against the expected sums; a column the expectation lacks must be null.
func compareReport(t *testing.T, doc reportDoc, want map[string]map[string]float64, total map[string]float64) {
	t.Helper()
	got := doc.byKey()
	if len(got) != len(want) {
		t.Errorf("--by %s: %d groups %v, want %d", doc.By, len(got), keys(got), len(want))
	}
	check := func(where string, row map[string]any, w map[string]float64) {
		for _, col := range reportedColumns() {
			g, ok := jsonFloat(row[col])
			wv, wok := w[col]
			switch {
			case ok != wok:
				t.Errorf("--by %s %s %s: reported %v, want %v (present %v)", doc.By, where, col, row[col], wv, wok)
			case ok && !testutil.CloseTo(g, wv):
				t.Errorf("--by %s %s %s: reported %.17g, InfluxQL says %.17g", doc.By, where, col, g, wv)
			}
		}
	}
	for key, w := range want {
		row, ok := got[key]
		if !ok {
			t.Errorf("--by %s: no row for %q", doc.By, key)
			continue
		}
		check(key, row, w)
	}
	check("TOTAL", doc.Total, total)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The report's numbers are InfluxDB's: for every grouping, every group's
// every column equals a direct InfluxQL sum over a two-node fleet's records
// (under --by gpu, each record's share computed here from its raw row), and
// the totals equal the fleet's.
func TestReportMatchesInfluxQL(t *testing.T) {
	run := runFleet(t)
	period := []string{"--config", run.cfgPath, "--since", run.from.Format(time.RFC3339Nano), "--until", run.to.Format(time.RFC3339Nano), "--simulated"}
	total := directSums(t, run.influx, "")[""]
	if total["requests"] != 48 || total["loaded_it_energy_j"] <= total["it_energy_j"] {
		t.Fatalf("fleet totals %v: want 48 requests and loaded energy above active", total)
	}
	for by, tag := range map[string]string{"model": "model", "tenant": "tenant", "node": "host", "upstream": "upstream"} {
		doc := reportJSONOf(t, append(period, "--by", by)...)
		compareReport(t, doc, directSums(t, run.influx, tag), total)
	}

	// --by gpu: a request on n GPUs counts 1/n on each, keyed node/gpu.
	want := map[string]map[string]float64{}
	for _, r := range run.influx.Rows(t, `SELECT * FROM deadlabour_request`) {
		host, _ := r.String("host")
		gpus, _ := r.String("gpus")
		devs := strings.Split(gpus, ",")
		for _, d := range devs {
			key := host + "/" + d
			if want[key] == nil {
				want[key] = map[string]float64{}
			}
			want[key]["requests"] += 1 / float64(len(devs))
			for _, field := range report.Fields() {
				if v, ok := r.Float(field); ok {
					want[key][field] += v / float64(len(devs))
				}
			}
		}
	}
	if len(want) != 4 {
		t.Fatalf("records ran on %d GPUs (%v), want 4", len(want), keys(want))
	}
	doc := reportJSONOf(t, append(period, "--by", "gpu")...)
	compareReport(t, doc, want, total)
	if r := doc.byKey()["gpu-a/0"]; r["requests"] != doc.byKey()["gpu-a/1"]["requests"] {
		t.Errorf("GPUs 0 and 1 of gpu-a serve the same tensor-parallel upstream but have %v and %v requests", r["requests"], doc.byKey()["gpu-a/1"]["requests"])
	}

	// Derived figures.
	m := reportJSONOf(t, append(period, "--by", "model")...)
	for key, row := range m.byKey() {
		w := directSums(t, run.influx, "model")[key]
		jpt, _ := jsonFloat(row["j_per_token"])
		idle, _ := jsonFloat(row["idle_share"])
		whr, _ := jsonFloat(row["wh_per_request"])
		if want := w["gpu_energy_j"] / (w["prompt_tokens"] + w["completion_tokens"]); !testutil.CloseTo(jpt, want) {
			t.Errorf("%s: J/token %v, want %v", key, jpt, want)
		}
		if want := 1 - w["it_energy_j"]/w["loaded_it_energy_j"]; !testutil.CloseTo(idle, want) || idle <= 0 {
			t.Errorf("%s: idle share %v, want %v", key, idle, want)
		}
		if want := w["facility_energy_j"] / 3600 / w["requests"]; !testutil.CloseTo(whr, want) {
			t.Errorf("%s: Wh/request %v, want %v", key, whr, want)
		}
	}

	// CSV carries the same numbers, exactly.
	recs, err := csv.NewReader(strings.NewReader(reportCLI(t, append(period, "--by", "model", "--format", "csv")...))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	groups := 0
	for _, rec := range recs[1:] {
		if rec[len(rec)-2] == "group" {
			groups++
		}
	}
	if groups != len(m.Rows) || recs[0][0] != "model" || recs[0][1] != "requests" || recs[0][len(recs[0])-2] != "line" {
		t.Fatalf("CSV: %d group lines, header %v", groups, recs[0])
	}
	for _, rec := range recs[1:] {
		if rec[len(rec)-2] != "group" {
			continue
		}
		row := m.byKey()[rec[0]]
		for i, col := range recs[0][1:] {
			cell := rec[i+1]
			if col == "line" {
				continue
			}
			if col == "currency" {
				if cell != m.Currency || cell != "USD" {
					t.Errorf("CSV %s currency %q, JSON %q, want USD", rec[0], cell, m.Currency)
				}
				continue
			}
			j, ok := jsonFloat(row[col])
			if cell == "" {
				if ok {
					t.Errorf("CSV %s %s empty, JSON says %v", rec[0], col, j)
				}
				continue
			}
			if v, err := strconv.ParseFloat(cell, 64); err != nil || v != j {
				t.Errorf("CSV %s %s = %q, JSON %v", rec[0], col, cell, j)
			}
		}
	}

	// The table names every group and the total.
	table := reportCLI(t, append(period, "--by", "model")...)
	for _, want := range []string{"mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Llama-3.1-70B-Instruct", "TOTAL active", "TOTAL (meters)", "idle overcapacity", "facility Wh", "dead labour USD", "SCI"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	// Simulated records are left out unless asked for.
	noSim := []string{"--config", run.cfgPath, "--since", run.from.Format(time.RFC3339Nano), "--until", run.to.Format(time.RFC3339Nano)}
	if doc := reportJSONOf(t, append(noSim, "--by", "model")...); len(doc.Rows) != 0 || doc.Simulated {
		t.Errorf("without --simulated: %d rows from simulated records, want none", len(doc.Rows))
	}
	if out := reportCLI(t, noSim...); !strings.Contains(out, "add --simulated") {
		t.Errorf("an empty table should say why:\n%s", out)
	}

	// The line-protocol source (the spool's reader) totals the same records
	// the same way, counts a replayed record once and skips other
	// measurements.
	lp := exportLineProtocol(t, run.influx, schema.MeasurementRequest)
	first := lp[:strings.IndexByte(lp, '\n')+1]
	file := filepath.Join(t.TempDir(), "records.lp")
	if err := os.WriteFile(file, []byte(lp+first+exportLineProtocol(t, run.influx, "deadlabour_gpu")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, by := range []string{"model", "gpu", "tenant"} {
		fromInflux := reportJSONOf(t, append(period, "--by", by)...)
		fromLP := reportJSONOf(t, "--line-protocol", file, "--since", run.from.Format(time.RFC3339Nano), "--until", run.to.Format(time.RFC3339Nano), "--simulated", "--by", by)
		want := map[string]map[string]float64{}
		for key, row := range fromInflux.byKey() {
			want[key] = map[string]float64{}
			for col, v := range row {
				if f, ok := jsonFloat(v); ok {
					want[key][col] = f
				}
			}
		}
		totals := map[string]float64{}
		for col, v := range fromInflux.Total {
			if f, ok := jsonFloat(v); ok {
				totals[col] = f
			}
		}
		compareReport(t, fromLP, want, totals)
	}
}

func TestReportBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.lp")
	os.WriteFile(bad, []byte("deadlabour_request,host=a request_id=\"x\",gpu_energy_j=1 1\ndeadlabour_request,host=a gpu_energy_j=oops 2\n"), 0o600)
	noInflux := filepath.Join(dir, "noinflux.yaml")
	os.WriteFile(noInflux, []byte("influx:\n  url: \"\"\nspool:\n  dir: "+filepath.Join(dir, "nospool")+"\n"), 0o600)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--by", "colour"}, 2, `--by "colour": want model, tenant, gpu, node or upstream`},
		{[]string{"--format", "xml"}, 2, `--format "xml": want table, csv, json or html`},
		{[]string{"--since", "yesterday"}, 2, `--since "yesterday": want a duration`},
		{[]string{"--since", "1h", "--until", "2h"}, 2, "is not before --until"},
		{[]string{"--line-protocol", bad, "--since", "1000000h"}, 1, "bad.lp: at line 2:40: field value has unrecognized type"},
		{[]string{"--config", noInflux}, 1, "sink: read spool: stat " + filepath.Join(dir, "nospool", "spool.db") + ": no such file"},
	} {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), append([]string{"report"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("report %v: exit %d, stderr %q; want exit %d and %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
}

// An InfluxDB that refuses the query gives its reason, and a wrong
// database is named.
func TestReportInfluxErrors(t *testing.T) {
	influx := influxtest.Start(t)
	src, err := report.NewInfluxSource(influx.URL(), "nosuchdb/autogen", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Read(context.Background(), report.Query{From: time.Unix(0, 0), To: time.Now(), By: "model"})
	if err == nil || !strings.Contains(err.Error(), `database "nosuchdb"`) || !strings.Contains(err.Error(), "database not found") {
		t.Errorf("unknown database: %v", err)
	}
}

// deadlabourd report's help says what --by gpu is: an even split of each
// record, since records hold no per-GPU shares (docs/schema.md, gpus).
func TestReportHelpSaysGPUSplitIsEven(t *testing.T) {
	var out, errb bytes.Buffer
	cli.Run(context.Background(), []string{"report", "-h"}, &out, &errb)
	if help := errb.String() + out.String(); !strings.Contains(help, "1/n") || !strings.Contains(help, "no per-GPU split") {
		t.Errorf("report -h does not say how --by gpu splits a record:\n%s", help)
	}
}
