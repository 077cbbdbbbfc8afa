package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// totalsDoc is the part of the JSON report that holds the totals.
type totalsDoc struct {
	Total  map[string]float64 `json:"total"`
	Meters map[string]float64 `json:"meters"`
	Idle   struct {
		Absorbed     map[string]float64                       `json:"absorbed"`
		Overcapacity map[string]float64                       `json:"overcapacity"`
		ByNode       map[string]map[string]map[string]float64 `json:"by_node"`
	} `json:"idle"`
	Methods []string `json:"method_versions"`
	Factors []string `json:"factors"`
}

func totalsOf(t *testing.T, args ...string) totalsDoc {
	t.Helper()
	var doc totalsDoc
	if err := json.Unmarshal([]byte(reportCLI(t, append(args, "--format", "json")...)), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestReportTotalsReconcile: the report's idle lines are InfluxDB's own
// sums of deadlabour_idle, and active + idle = the meters, for every
// quantity idle carries, from InfluxQL and from line protocol alike; the
// loaded figures plus overcapacity reach the same totals.
func TestReportTotalsReconcile(t *testing.T) {
	run := runFleet(t)
	period := []string{"--since", run.from.Format(time.RFC3339Nano), "--until", run.to.Format(time.RFC3339Nano), "--simulated"}
	sum := func(field, measurement, where string) float64 {
		for _, r := range run.influx.Rows(t, fmt.Sprintf(`SELECT sum(%q) AS v FROM %s %s`, field, measurement, where)) {
			v, _ := r.Float("v")
			return v
		}
		return 0
	}
	lp := filepath.Join(t.TempDir(), "all.lp")
	all := exportLineProtocol(t, run.influx, schema.MeasurementRequest) + exportLineProtocol(t, run.influx, schema.MeasurementIdle) +
		exportLineProtocol(t, run.influx, schema.MeasurementGPU)
	if err := os.WriteFile(lp, []byte(all), 0o600); err != nil {
		t.Fatal(err)
	}
	fromInflux := totalsOf(t, append([]string{"--config", run.cfgPath, "--by", "node"}, period...)...)
	fromLP := totalsOf(t, append([]string{"--line-protocol", lp, "--by", "node"}, period...)...)
	fields := []string{"it_energy_j", "facility_energy_j", "co2e_g", "embodied_co2e_g", "water_l", "energy_cost", "depreciation_cost", "dead_labour_cost"}
	for name, doc := range map[string]totalsDoc{"InfluxQL": fromInflux, "line protocol": fromLP} {
		for _, f := range fields {
			active := sum(f, "deadlabour_request", "")
			abs := sum(f, "deadlabour_idle", `WHERE "share" = 'absorbed'`)
			over := sum(f, "deadlabour_idle", `WHERE "share" != 'absorbed'`)
			if !testutil.CloseTo(doc.Idle.Absorbed[f], abs) || !testutil.CloseTo(doc.Idle.Overcapacity[f], over) {
				t.Errorf("%s %s: idle absorbed %v overcapacity %v, InfluxDB says %v and %v", name, f, doc.Idle.Absorbed[f], doc.Idle.Overcapacity[f], abs, over)
			}
			if m := doc.Meters[f]; !testutil.CloseTo(m, active+abs+over) || !testutil.CloseTo(doc.Total[f], active) {
				t.Errorf("%s %s: meters %v active %v, want %v and %v", name, f, m, doc.Total[f], active+abs+over, active)
			}
			if by := doc.Idle.ByNode; len(by) != 2 || !testutil.CloseTo(by["gpu-a"]["overcapacity"][f]+by["gpu-b"]["overcapacity"][f], over) {
				t.Errorf("%s %s: idle by node %v, want gpu-a and gpu-b adding up to %v", name, f, by, over)
			}
		}
		// The loaded figures plus the idle no record absorbed reach the meters too.
		if l, o := sum("loaded_it_energy_j", "deadlabour_request", ""), doc.Idle.Overcapacity["it_energy_j"]; !testutil.CloseTo(l+o, doc.Meters["it_energy_j"]) {
			t.Errorf("%s: loaded IT energy %v + overcapacity %v != meters %v", name, l, o, doc.Meters["it_energy_j"])
		}
		if doc.Idle.Overcapacity["facility_energy_j"] <= 0 || doc.Idle.Absorbed["facility_energy_j"] <= 0 {
			t.Errorf("%s: idle %+v: want both shares", name, doc.Idle)
		}
		// SCI = (E×I + M) / R, and the embodied range brackets the point value.
		tot := doc.Total
		if want := (tot["co2e_g"] + tot["embodied_co2e_g"]) / tot["requests"]; !testutil.CloseTo(tot["sci_g_per_request"], want) || want <= 0 {
			t.Errorf("%s: SCI %v g/request, want %v", name, tot["sci_g_per_request"], want)
		}
		tokens := tot["prompt_tokens"] + tot["completion_tokens"]
		if want := 1000 * (tot["co2e_g"] + tot["embodied_co2e_g"]) / tokens; !testutil.CloseTo(tot["sci_g_per_1k_tokens"], want) {
			t.Errorf("%s: SCI %v g/1k tokens, want %v", name, tot["sci_g_per_1k_tokens"], want)
		}
		if lo, hi := tot["embodied_co2e_g_low"], tot["embodied_co2e_g_high"]; lo <= 0 || lo > tot["embodied_co2e_g"] || hi < tot["embodied_co2e_g"] {
			t.Errorf("%s: embodied range %v–%v around %v", name, lo, hi, tot["embodied_co2e_g"])
		}
		if len(doc.Methods) == 0 || len(doc.Factors) == 0 {
			t.Errorf("%s: method versions %v, factors %v", name, doc.Methods, doc.Factors)
		}
	}

	// The table: idle lines, no e-notation, default columns within 120
	// characters; --columns picks others.
	table := reportCLI(t, append([]string{"--config", run.cfgPath}, period...)...)
	for _, want := range []string{"TOTAL active", "idle absorbed", "idle overcapacity", "TOTAL (meters)", "SCI", "dead labour USD", "embodied CO2e, catalogue low–high"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if regexp.MustCompile(`\d[eE][-+]?\d`).MatchString(table) || regexp.MustCompile(`\d+h\d+m\d+s`).MatchString(table) {
		t.Errorf("table has e-notation or a Go duration:\n%s", table)
	}
	for _, l := range strings.Split(table, "\n")[1:] {
		if n := len([]rune(l)); n > 120 && !strings.HasPrefix(l, "SCI") {
			t.Errorf("a table line of %d characters: %q", n, l)
		}
	}
	cols := reportCLI(t, append([]string{"--config", run.cfgPath, "--columns", "requests,co2e_market_g,water_onsite_l"}, period...)...)
	if !strings.Contains(cols, "water onsite L") || strings.Contains(cols, "facility Wh") {
		t.Errorf("--columns requests,co2e_market_g,water_onsite_l:\n%s", cols)
	}

	// The HTML report, from InfluxQL and from line protocol.
	dir := t.TempDir()
	for name, src := range map[string][]string{"influx": {"--config", run.cfgPath}, "lp": {"--line-protocol", lp}} {
		out := filepath.Join(dir, name+".html")
		reportCLI(t, append(append(src, period...), "--format", "html", "--out", out)...)
		checkHTMLReport(t, out, fromInflux)
	}
}

// checkHTMLReport checks the page's text, then what headless Chromium
// renders of it (skipped without chromium). DEADLABOUR_REPORT_SCREENSHOT
// names a PNG to take of it.
func checkHTMLReport(t *testing.T, path string, doc totalsDoc) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<svg", "Scope 2, location-based", "Scope 3, embodied", "SCI g/request", "idle overcapacity",
		"meta-llama/Llama-3.1-70B-Instruct", doc.Methods[0]} {
		if !strings.Contains(page, want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
	if m := regexp.MustCompile(`(?i)<script|\bsrc=|\bhref=|url\(|@import`).FindString(page); m != "" {
		t.Errorf("%s has a script or fetches something: %q", path, m)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Logf("chromium is not installed: the HTML report is not rendered (apt-get install chromium)")
		return
	}
	dom, err := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://"+path).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	// 3 models + idle in each of two charts, 3 parts of the idle bar.
	if n := strings.Count(string(dom), "<path"); n < 2*4+3 {
		t.Errorf("the rendered page has %d svg paths, want at least 11", n)
	}
	for _, want := range []string{"headline", "requests", "Methodology"} {
		if !strings.Contains(strings.ToLower(string(dom)), strings.ToLower(want)) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if shot := os.Getenv("DEADLABOUR_REPORT_SCREENSHOT"); shot != "" && strings.HasSuffix(path, "influx.html") {
		if out, err := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
			"--screenshot="+shot, "--window-size=1100,1900", "file://"+path).CombinedOutput(); err != nil {
			t.Errorf("screenshot: %v: %s", err, out)
		}
	}
}
