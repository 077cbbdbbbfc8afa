package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/schema"
)

// TestReportCurrencies: records carry the currency of their money fields
// (facility.currency, the tag currency). A report never sums two
// currencies: over a fleet with EUR and USD nodes it refuses and says how
// to pick one (--currency); with one currency it names it. Records from
// before the tag (schema 1) count with the one currency there is. From
// InfluxDB and from line protocol alike.
func TestReportCurrencies(t *testing.T) {
	influx := influxtest.Start(t)
	at := time.Now().Add(-time.Minute)
	var lines strings.Builder
	var usdOnly strings.Builder
	add := func(node, currency string, n int, cost float64) {
		rs := schema.NewRequestSchema([]string{"m"}, currency)
		for i := range n {
			r := estimator.Record{Span: estimator.Span{ID: fmt.Sprintf("%s-%d", node, i), Upstream: "up", Model: "m", Start: at.Add(-time.Second),
				End: at, Status: "200", PromptTokens: 10, CompletionTokens: 5, CachedTokens: -1, ReasoningTokens: -1, UsageSource: "reported"},
				Node: node, Time: at.Add(time.Duration(i)), GPUEnergyJ: 1, DeadLabourCost: cost, EnergyCost: cost}
			p, err := rs.Point(r)
			if err != nil {
				t.Fatal(err)
			}
			line, err := schema.Line(p)
			if err != nil {
				t.Fatal(err)
			}
			lines.WriteString(line + "\n")
			if currency != "EUR" {
				usdOnly.WriteString(line + "\n")
			}
		}
	}
	add("eur-node", "EUR", 3, 1)
	add("usd-node", "USD", 2, 10)
	add("old-node", "", 1, 100) // schema 1: no currency tag
	influx.Write(t, lines.String())
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("influx:\n  url: %s\n  bucket: %s\nspool:\n  dir: %s\n", influx.URL(), influx.Bucket(), dir)), 0o600)
	all, usd := filepath.Join(dir, "all.lp"), filepath.Join(dir, "usd.lp")
	os.WriteFile(all, []byte(lines.String()), 0o600)
	os.WriteFile(usd, []byte(usdOnly.String()), 0o600)
	period := []string{"--since", "1h", "--simulated"}

	for _, src := range [][]string{{"--config", cfg}, {"--line-protocol", all}} {
		for _, by := range []string{"node", "model", "gpu"} {
			var out, errb bytes.Buffer
			args := append(append(append([]string{"report"}, src...), period...), "--by", by)
			if code := cli.Run(context.Background(), args, &out, &errb); code != 1 || !strings.Contains(errb.String(), "EUR, USD") ||
				!strings.Contains(errb.String(), "--currency") {
				t.Errorf("%v: exit %d, %q; want a refusal naming EUR, USD and --currency", args, code, errb.String())
			}
		}
		doc := reportJSONOf(t, append(append(src, period...), "--by", "node", "--currency", "EUR")...)
		if cost, _ := jsonFloat(doc.Total["dead_labour_cost"]); doc.Currency != "EUR" || len(doc.Rows) != 1 || cost != 3 {
			t.Errorf("%v --currency EUR: %+v; want the EUR node alone, 3 EUR", src, doc)
		}
		table := reportCLI(t, append(append(src, period...), "--by", "node", "--currency", "USD")...)
		if !strings.Contains(table, "money in USD") || !strings.Contains(table, "usd-node") || strings.Contains(table, "old-node") {
			t.Errorf("%v --currency USD: the table should say USD and show only the USD node:\n%s", src, table)
		}
	}
	// One currency and untagged records: summed together, in that currency.
	doc := reportJSONOf(t, append([]string{"--line-protocol", usd}, append(period, "--by", "model")...)...)
	if cost, _ := jsonFloat(doc.Total["dead_labour_cost"]); doc.Currency != "USD" || cost != 120 {
		t.Errorf("USD and untagged records: %+v; want 120 USD", doc)
	}
	csv := reportCLI(t, "--line-protocol", usd, "--since", "1h", "--simulated", "--format", "csv")
	if header, _, _ := strings.Cut(csv, "\n"); !strings.HasSuffix(header, ",currency") || !strings.Contains(csv, ",USD\n") {
		t.Errorf("CSV lacks the currency column:\n%s", csv)
	}
}
