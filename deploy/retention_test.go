package deploy

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/schema"
)

// retentionStatements are the InfluxQL statements docs/operations.md gives
// for retention and downsampling, one per line between its markers.
func retentionStatements(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- retention:begin -->\n```sql\n(.*?)```\n<!-- retention:end -->").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/operations.md has no retention:begin/end block of SQL")
	}
	var out []string
	for _, line := range strings.Split(string(m[1]), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// sumsOf pairs the aggregates of a SELECT: alias -> function and field.
var aggRe = regexp.MustCompile(`(sum|count|max|mean)\("([a-z_]+)"\) AS "([a-z_]+)"`)

// The retention policies and continuous queries in docs/operations.md are
// accepted by InfluxDB 1.8.3, and, run over three hours of records and
// telemetry (as a backfill, with a time range added), give rollups whose
// totals equal the raw data's, per tag, without the simulated points.
func TestRetentionAndContinuousQueries(t *testing.T) {
	influx := influxtest.Start(t)
	rng := rand.New(rand.NewPCG(7, 9))
	start := time.Now().Add(-5 * time.Hour).Truncate(time.Hour)
	end := start.Add(3 * time.Hour)
	var lines bytes.Buffer
	add := func(p schema.Point) {
		line, err := schema.Line(p)
		if err != nil {
			t.Fatal(err)
		}
		lines.WriteString(line + "\n")
	}
	models := []string{"meta-llama/Llama-3.1-70B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"}
	simulated := 0
	for i := range 400 {
		at := start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)))))
		r := estimator.Record{
			Span: estimator.Span{ID: fmt.Sprintf("req-%d", i), Upstream: "up", Model: models[i%2], Tenant: fmt.Sprintf("t%d", i%3),
				Start: at.Add(-time.Second), End: at, Status: "200", PromptTokens: rng.Int64N(900), CompletionTokens: rng.Int64N(300),
				CachedTokens: -1, ReasoningTokens: -1, UsageSource: "reported", Devices: []string{"0"}, Served: true},
			Node: []string{"gpu-a", "gpu-b"}[i%2], Time: at, GPUEnergyJ: 300 * rng.Float64(), ITEnergyJ: 400 * rng.Float64(),
			FacilityEnergyJ: 480 * rng.Float64(), CO2eG: rng.Float64(), DeadLabourCost: 1e-3 * rng.Float64(), Simulated: i%10 == 0,
		}
		if r.Simulated {
			simulated++
		}
		r.LoadedDeadLabourCost = r.DeadLabourCost * 1.3
		p, err := schema.RequestPoint(r)
		if err != nil {
			t.Fatal(err)
		}
		add(p)
	}
	for w := start; w.Before(end); w = w.Add(10 * time.Second) {
		for g := range 2 {
			add(schema.GPUPoint("gpu-a", false, schema.GPUWindow{Device: fmt.Sprint(g), Name: "NVIDIA H100", Start: w, Samples: 100,
				PowerMeanW: 100 + 500*rng.Float64(), PowerMaxW: 700 * rng.Float64(), EnergyJ: 5000 * rng.Float64(), UtilGPUPct: 100 * rng.Float64(),
				UtilMemPct: 50 * rng.Float64(), TempC: 40 + 40*rng.Float64(), SMClockMHz: 1800, PowerLimitW: 700}))
			add(schema.IdlePoint("gpu-a", "USD", w.Minute()%7 == 0, false, estimator.IdleShare{Device: fmt.Sprint(g), Start: w, End: w.Add(10 * time.Second),
				Joules: 700 * rng.Float64(), DepreciationCost: 1e-4 * rng.Float64(), EmbodiedCO2eG: 0.01 * rng.Float64(), Method: estimator.MethodCounter}))
		}
	}
	influx.Write(t, lines.String())

	stmts := retentionStatements(t)
	var cqs []string
	for _, s := range stmts {
		influx.Exec(t, s) // fails the test on any error
		if strings.HasPrefix(s, "CREATE CONTINUOUS QUERY") {
			cqs = append(cqs, s)
		}
	}
	if len(cqs) != 3 {
		t.Fatalf("%d continuous queries in the docs, want 3 (requests, idle, GPU)", len(cqs))
	}
	if rows := influx.Rows(t, `SHOW RETENTION POLICIES ON "deadlabour"`); len(rows) != 2 {
		t.Errorf("%d retention policies, want autogen and rollup", len(rows))
	}

	for _, cq := range cqs {
		sel := regexp.MustCompile(`BEGIN (.*) END$`).FindStringSubmatch(cq)
		into := regexp.MustCompile(`INTO ("[^"]+"\."[^"]+"\."[^"]+")`).FindStringSubmatch(cq)
		from := regexp.MustCompile(`FROM ("[^"]+"\."[^"]+"\."[^"]+")`).FindStringSubmatch(cq)
		if sel == nil || into == nil || from == nil || !strings.Contains(sel[1], `WHERE "simulated" = false GROUP BY time(`) {
			t.Fatalf("continuous query not in the expected form (SELECT ... INTO db.rp.m FROM db.rp.m WHERE \"simulated\" = false GROUP BY time(..), *):\n%s", cq)
		}
		// The backfill form the docs describe: the CQ's SELECT with a time range.
		backfill := strings.Replace(sel[1], " GROUP BY time(", fmt.Sprintf(" AND time >= %d AND time < %d GROUP BY time(", start.UnixNano(), end.UnixNano()), 1)
		influx.Exec(t, backfill)

		for _, by := range []string{"", ` GROUP BY "host"`} {
			var raw, rolled []string
			type agg struct{ fn, field, alias string }
			var aggs []agg
			for _, m := range aggRe.FindAllStringSubmatch(sel[1], -1) {
				aggs = append(aggs, agg{m[1], m[2], m[3]})
				raw = append(raw, fmt.Sprintf(`%s("%s") AS "%s"`, m[1], m[2], m[3]))
				// What an hour's or five minutes' rollup adds up to over the
				// period: sums and counts add, maxima max; means of equal
				// windows average.
				fn := map[string]string{"sum": "sum", "count": "sum", "max": "max", "mean": "mean"}[m[1]]
				rolled = append(rolled, fmt.Sprintf(`%s("%s") AS "%s"`, fn, m[3], m[3]))
			}
			want := influx.Rows(t, fmt.Sprintf(`SELECT %s FROM %s WHERE "simulated" = false AND time >= %d AND time < %d%s`,
				strings.Join(raw, ", "), from[1], start.UnixNano(), end.UnixNano(), by))
			got := influx.Rows(t, fmt.Sprintf(`SELECT %s FROM %s%s`, strings.Join(rolled, ", "), into[1], by))
			if len(got) != len(want) || len(want) == 0 {
				t.Fatalf("%s%s: %d rolled-up rows, %d raw", into[1], by, len(got), len(want))
			}
			for i := range want {
				for _, a := range aggs {
					w, wok := want[i].Float(a.alias)
					g, gok := got[i].Float(a.alias)
					if wok != gok || math.Abs(g-w) > 1e-9*math.Abs(w) {
						t.Errorf("%s%s row %d %s: rollup %v (%v), raw %s(%s) %v (%v)", into[1], by, i, a.alias, g, gok, a.fn, a.field, w, wok)
					}
				}
			}
		}
	}
	// Simulated records stayed out.
	rows := influx.Rows(t, `SELECT sum("requests") AS n FROM "deadlabour"."rollup"."deadlabour_request_1h"`)
	if n, _ := rows[0].Int("n"); n != int64(400-simulated) {
		t.Errorf("rollup counts %d requests, want the %d real ones", n, 400-simulated)
	}
}
