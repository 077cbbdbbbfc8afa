package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// --by namespace and --by pod group by the string fields namespace and pod,
// which InfluxQL cannot GROUP BY: from InfluxDB and from a line-protocol
// file, each namespace's and pod's sums are what was written for it, pods
// of the same name in two namespaces stay apart (keyed namespace/pod),
// records without a pod group under "" ((none) in the table), and the rows
// add up to the total.
func TestReportByNamespaceAndPod(t *testing.T) {
	influx := influxtest.Start(t)
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	pods := [][2]string{{"team-a", "llm-0"}, {"team-a", "llm-1"}, {"team-b", "llm-0"}, {"", ""}}
	cols := []string{"requests", "prompt_tokens", "completion_tokens", "gpu_energy_j", "co2e_g", "dead_labour_cost"}
	want := map[string]map[string]map[string]float64{"namespace": {}, "pod": {}} // by, key, column
	total := map[string]float64{}
	var lines strings.Builder
	for i := range 40 {
		ns, pod := pods[i%len(pods)][0], pods[i%len(pods)][1]
		at := start.Add(time.Duration(i) * time.Second)
		r := estimator.Record{
			Span: estimator.Span{ID: fmt.Sprintf("req-%d", i), Upstream: "vllm", Model: "m", Tenant: "t", Start: at.Add(-time.Second), End: at,
				Status: "200", PromptTokens: int64(100 + i), CompletionTokens: int64(10 * i), CachedTokens: -1, ReasoningTokens: -1,
				UsageSource: "reported", Devices: []string{"0", "1"}[:1+i%2], Served: true, Namespace: ns, Pod: pod},
			Node: []string{"gpu-a", "gpu-b"}[i%3%2], Time: at, GPUEnergyJ: 10.5 * float64(i+1), ITEnergyJ: 20, FacilityEnergyJ: 24,
			CO2eG: 0.125 * float64(i), DeadLabourCost: 1e-3 * float64(i+2),
		}
		p, err := schema.RequestPoint(r)
		if err != nil {
			t.Fatal(err)
		}
		line, err := schema.Line(p)
		if err != nil {
			t.Fatal(err)
		}
		lines.WriteString(line)
		lines.WriteByte('\n')
		vals := map[string]float64{"requests": 1, "prompt_tokens": float64(r.PromptTokens), "completion_tokens": float64(r.CompletionTokens),
			"gpu_energy_j": r.GPUEnergyJ, "co2e_g": r.CO2eG, "dead_labour_cost": r.DeadLabourCost}
		podKey := ""
		if pod != "" {
			podKey = ns + "/" + pod
		}
		for by, key := range map[string]string{"namespace": ns, "pod": podKey} {
			if want[by][key] == nil {
				want[by][key] = map[string]float64{}
			}
			for c, v := range vals {
				want[by][key][c] += v
			}
		}
		for c, v := range vals {
			total[c] += v
		}
	}
	influx.Write(t, lines.String())
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	lp := filepath.Join(dir, "records.lp")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("influx:\n  url: %s\n  bucket: %s\nspool:\n  dir: %s\n", influx.URL(), influx.Bucket(), dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lp, []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	period := []string{"--since", start.Add(-time.Minute).Format(time.RFC3339), "--until", start.Add(time.Hour).Format(time.RFC3339)}
	if len(want["pod"]) != 4 || len(want["namespace"]) != 3 {
		t.Fatalf("test data: %d pods and %d namespaces, want 4 and 3", len(want["pod"]), len(want["namespace"]))
	}

	for source, args := range map[string][]string{"InfluxDB": {"--config", cfg}, "line protocol": {"--line-protocol", lp}} {
		for _, by := range []string{"namespace", "pod", "gpu"} {
			doc := reportJSONOf(t, append(append(args, period...), "--by", by)...)
			got := doc.byKey()
			if w := want[by]; w != nil {
				if len(got) != len(w) {
					t.Errorf("%s --by %s: groups %q, want %q", source, by, keys(got), keys(w))
				}
				for key, wcols := range w {
					for _, c := range cols {
						if g, ok := jsonFloat(got[key][c]); !ok || !testutil.CloseTo(g, wcols[c]) {
							t.Errorf("%s --by %s %q %s: reported %v, written %v", source, by, key, c, got[key][c], wcols[c])
						}
					}
				}
			}
			for _, c := range cols {
				sum := 0.0
				for _, row := range doc.Rows {
					v, _ := jsonFloat(row[c])
					sum += v
				}
				if tot, _ := jsonFloat(doc.Total[c]); !testutil.CloseTo(sum, total[c]) || !testutil.CloseTo(tot, total[c]) {
					t.Errorf("%s --by %s %s: rows sum to %v, total %v; written %v", source, by, c, sum, tot, total[c])
				}
			}
		}
		table := reportCLI(t, append(append(args, period...), "--by", "pod")...)
		for _, s := range []string{"team-a/llm-0", "team-a/llm-1", "team-b/llm-0", "(none)", "TOTAL active"} {
			if !strings.Contains(table, s) {
				t.Errorf("%s --by pod table lacks %q:\n%s", source, s, table)
			}
		}
	}
}
