package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/redact"
)

// The report subcommand: totals of the request records over a period, by
// model, tenant, GPU, node or upstream, from InfluxDB (InfluxQL) or from
// line protocol (the spool's, or an exported file).

// reportQuery is what a report asks of its record source.
type reportQuery struct {
	From, To  time.Time // [From, To)
	By        string    // one of reportDimensions
	Simulated bool      // include records written under --simulate
	Currency  string    // only records tagged with this currency; "" all
}

// recordSource totals deadlabour_request records per group and currency
// (the tag currency; "" for records written before it). Sources:
// influxSource (InfluxQL) and lineProtocolSource (the spool, a file).
type recordSource interface {
	Sums(ctx context.Context, q reportQuery) ([]reportRow, error)
}

// reportDimensions maps --by to the record's tag; "gpu" is special: records
// carry their GPUs as a field (gpus, e.g. "0,1"), see gpuShares.
var reportDimensions = map[string]string{
	"model":    "model",
	"tenant":   "tenant",
	"node":     "host",
	"upstream": "upstream",
	"gpu":      "",
}

// reportColumn is one summed deadlabour_request field.
type reportColumn struct {
	field string // the field, and its name in CSV and JSON (schema units)
	// header and scale are for the table: value / scale, under header.
	// An empty header leaves the column out of the table.
	header string
	scale  float64
}

// reportColumns are the fields a report sums, in output order. Fields no
// record in the period has (older records, features not configured) are
// absent: empty in CSV, null in JSON, left out of the table.
var reportColumns = []reportColumn{
	{"prompt_tokens", "", 1},
	{"completion_tokens", "", 1},
	{"gpu_energy_j", "GPU Wh", 3600},
	{"host_energy_j", "", 1},
	{"static_energy_j", "", 1},
	{"it_energy_j", "IT Wh", 3600},
	{"facility_energy_j", "facility Wh", 3600},
	{"co2e_g", "CO2e g", 1},
	{"co2e_market_g", "", 1},
	{"embodied_co2e_g", "embodied g", 1},
	{"water_l", "water L", 1},
	{"water_onsite_l", "", 1},
	{"water_offsite_l", "", 1},
	{"energy_cost", "energy", 1},
	{"depreciation_cost", "depreciation", 1},
	{"training_cost", "training", 1},
	{"training_co2e_g", "", 1},
	{"dead_labour_cost", "dead labour", 1},
	{"living_labour_s", "", 1},
	{"loaded_gpu_energy_j", "", 1},
	{"loaded_it_energy_j", "", 1},
	{"loaded_facility_energy_j", "loaded facility Wh", 3600},
	{"loaded_co2e_g", "", 1},
	{"loaded_energy_cost", "", 1},
	{"loaded_depreciation_cost", "", 1},
	{"loaded_dead_labour_cost", "loaded dead labour", 1},
}

// reportRow is one group's totals.
type reportRow struct {
	Key      string
	Currency string // of the money sums; "" when the records do not say
	// Requests is count(request_id); a fraction under --by gpu, where a
	// request on n GPUs counts 1/n on each.
	Requests float64
	Sums     map[string]float64 // by field; only fields some record had
}

// add adds o's totals times share.
func (r *reportRow) add(o reportRow, share float64) {
	r.Requests += o.Requests * share
	if r.Sums == nil {
		r.Sums = map[string]float64{}
	}
	for f, v := range o.Sums {
		r.Sums[f] += v * share
	}
}

// derived figures, from the sums; ok is false where a divisor is missing.
func (r reportRow) tokens() (float64, bool) {
	p, okp := r.Sums["prompt_tokens"]
	c, okc := r.Sums["completion_tokens"]
	return p + c, okp || okc
}

// jPerToken is measured GPU energy per token (prompt and completion). Records
// whose tokens are unknown add energy and no tokens, so it is an upper bound
// where usage_source = 'unknown' records exist.
func (r reportRow) jPerToken() (float64, bool) {
	t, ok := r.tokens()
	e, oke := r.Sums["gpu_energy_j"]
	return safeDiv(e, t, ok && oke)
}

// whPerRequest is facility energy per request in Wh.
func (r reportRow) whPerRequest() (float64, bool) {
	e, ok := r.Sums["facility_energy_j"]
	return safeDiv(e/3600, r.Requests, ok)
}

// idleShare is the part of the loaded IT energy that is idle capacity: 1 -
// active / loaded. It needs the loaded fields (attribution.idle_window).
func (r reportRow) idleShare() (float64, bool) {
	a, oka := r.Sums["it_energy_j"]
	l, okl := r.Sums["loaded_it_energy_j"]
	if !oka || !okl || l <= 0 {
		return 0, false
	}
	return 1 - a/l, true
}

func safeDiv(a, b float64, ok bool) (float64, bool) {
	if !ok || b <= 0 {
		return 0, false
	}
	return a / b, true
}

// rowSet accumulates rows by key and currency.
type rowSet map[[2]string]*reportRow

func (s rowSet) add(key, currency string, o reportRow, share float64) {
	r := s[[2]string{key, currency}]
	if r == nil {
		r = &reportRow{Key: key, Currency: currency, Sums: map[string]float64{}}
		s[[2]string{key, currency}] = r
	}
	r.add(o, share)
}

// sorted returns the rows ordered by key, then currency.
func (s rowSet) sorted() []reportRow {
	out := make([]reportRow, 0, len(s))
	for _, r := range s {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Currency < out[j].Currency
	})
	return out
}

// oneCurrency merges a source's rows into one per key, in one currency:
// money in two currencies is never summed. Records without a currency
// (written before the tag) count with the one currency there is.
func oneCurrency(rows []reportRow) ([]reportRow, string, error) {
	var currencies []string
	for _, r := range rows {
		if r.Currency != "" && !slices.Contains(currencies, r.Currency) {
			currencies = append(currencies, r.Currency)
		}
	}
	if len(currencies) > 1 {
		sort.Strings(currencies)
		return nil, "", fmt.Errorf("the records are in %d currencies (%s): money in different currencies cannot be summed; "+
			"report one at a time with --currency %s", len(currencies), strings.Join(currencies, ", "), currencies[0])
	}
	currency := ""
	if len(currencies) == 1 {
		currency = currencies[0]
	}
	set := rowSet{}
	for _, r := range rows {
		set.add(r.Key, currency, r, 1)
	}
	return set.sorted(), currency, nil
}

// gpuShares says how one record (or a group of records with the same GPUs)
// counts under --by gpu: a request that ran on n GPUs counts 1/n of its
// request, tokens, energy, carbon and money on each, so that the GPUs' rows
// add up to the node's totals. The key is node/gpu, since every node has a
// GPU 0; a request on no GPU (a CPU-only upstream) counts under node/-.
func gpuShares(host, gpus string) (keys []string, share float64) {
	if gpus == "" {
		return []string{host + "/-"}, 1
	}
	devs := strings.Split(gpus, ",")
	keys = make([]string, len(devs))
	for i, d := range devs {
		keys[i] = host + "/" + d
	}
	return keys, 1 / float64(len(devs))
}

// parseWhen reads --since and --until: a duration before now (90m, 24h,
// 7d) or an RFC 3339 time.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--%s %q: want a duration before now (24h, 7d) or a time (2025-01-31T00:00:00Z)", flag, s)
	}
	return now.Add(-d), nil
}

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file (influx.url, bucket and token)")
	since := fs.String("since", "24h", "start: a duration before now (24h, 7d) or an RFC 3339 time")
	until := fs.String("until", "0s", "end (exclusive): like --since; default now")
	by := fs.String("by", "model", "group by model, tenant, gpu, node or upstream (gpu: a request on n GPUs counts 1/n on each; records hold no per-GPU split)")
	format := fs.String("format", "table", "table, csv or json")
	simulated := fs.Bool("simulated", false, "include records written under --simulate (left out by default)")
	tokenFile := fs.String("influx-token-file", "", "read the InfluxDB token from this file instead of the config's token_env/token_file")
	lpFile := fs.String("line-protocol", "", "read records from this line-protocol file ('-': standard input) instead of InfluxDB")
	currency := fs.String("currency", "", "only records whose money is in this currency (ISO 4217, e.g. EUR): needed when nodes use several")
	timeout := fs.Duration("timeout", time.Minute, "give up on InfluxDB after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: deadlabourd report [--since 24h] [--until T] [--by model|tenant|gpu|node|upstream] [--format table|csv|json]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if _, ok := reportDimensions[*by]; !ok {
		return fmt.Errorf("%w: --by %q: want model, tenant, gpu, node or upstream", errUsage, *by)
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return fmt.Errorf("%w: --format %q: want table, csv or json", errUsage, *format)
	}
	now := time.Now()
	from, err := parseWhen("since", *since, now)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	to, err := parseWhen("until", *until, now)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !from.Before(to) {
		return fmt.Errorf("%w: --since %s is not before --until %s", errUsage, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}

	var src recordSource
	source := "" // where the records came from, for the table's heading
	switch {
	case *lpFile != "":
		src, source = lineProtocolFile(*lpFile), *lpFile
	default:
		cfg, err := config.Load(*cfgPath, -1)
		if err != nil {
			return err
		}
		if cfg.Influx.URL == "" {
			src, source = spoolSource(cfg), "spool "+cfg.Spool.Dir
			break
		}
		token, err := reportToken(cfg, *tokenFile)
		if err != nil {
			return err
		}
		src, err = newInfluxSource(cfg.Influx.URL, cfg.Influx.Bucket, token, *timeout)
		if err != nil {
			return err
		}
		source = redact.URL(cfg.Influx.URL) + " " + cfg.Influx.Bucket
	}
	q := reportQuery{From: from, To: to, By: *by, Simulated: *simulated, Currency: *currency}
	rows, err := src.Sums(ctx, q)
	if err != nil {
		return err
	}
	rows, q.Currency, err = oneCurrency(rows)
	if err != nil {
		return err
	}
	switch *format {
	case "csv":
		return writeReportCSV(stdout, q, rows)
	case "json":
		return writeReportJSON(stdout, q, rows)
	}
	return writeReportTable(stdout, q, rows, source)
}

func reportToken(cfg *config.Config, tokenFile string) (string, error) {
	if tokenFile == "" {
		return cfg.InfluxToken(os.Getenv)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("--influx-token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// total adds every row: the fleet's totals (under --by gpu, too: the
// shares add up). The rows are in one currency (oneCurrency).
func total(rows []reportRow) reportRow {
	t := reportRow{Key: "TOTAL", Sums: map[string]float64{}}
	for _, r := range rows {
		t.add(r, 1)
	}
	return t
}

// derivedColumns are computed from the sums.
var derivedColumns = []struct {
	name, header string
	f            func(reportRow) (float64, bool)
}{
	{"j_per_token", "J/token", reportRow.jPerToken},
	{"wh_per_request", "Wh/request", reportRow.whPerRequest},
	{"idle_share", "idle share", reportRow.idleShare},
}

func writeReportCSV(w io.Writer, q reportQuery, rows []reportRow) error {
	cw := csv.NewWriter(w)
	header := []string{q.By, "requests"}
	for _, c := range reportColumns {
		header = append(header, c.field)
	}
	for _, d := range derivedColumns {
		header = append(header, d.name)
	}
	cw.Write(append(header, "currency"))
	num := func(v float64, ok bool) string {
		if !ok {
			return ""
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	for _, r := range rows {
		rec := []string{r.Key, num(r.Requests, true)}
		for _, c := range reportColumns {
			v, ok := r.Sums[c.field]
			rec = append(rec, num(v, ok))
		}
		for _, d := range derivedColumns {
			rec = append(rec, num(d.f(r)))
		}
		cw.Write(append(rec, q.Currency))
	}
	cw.Flush()
	return cw.Error()
}

// reportJSON is the --format json document.
type reportJSON struct {
	By        string           `json:"by"`
	Currency  string           `json:"currency"` // of the money figures; "" when the records do not say
	From      time.Time        `json:"from"`
	Until     time.Time        `json:"until"`
	Simulated bool             `json:"simulated_included"`
	Rows      []map[string]any `json:"rows"`
	Total     map[string]any   `json:"total"`
}

func rowJSON(by string, r reportRow) map[string]any {
	m := map[string]any{by: r.Key, "requests": r.Requests}
	for _, c := range reportColumns {
		if v, ok := r.Sums[c.field]; ok {
			m[c.field] = v
		} else {
			m[c.field] = nil
		}
	}
	for _, d := range derivedColumns {
		if v, ok := d.f(r); ok {
			m[d.name] = v
		} else {
			m[d.name] = nil
		}
	}
	return m
}

func writeReportJSON(w io.Writer, q reportQuery, rows []reportRow) error {
	doc := reportJSON{By: q.By, Currency: q.Currency, From: q.From.UTC(), Until: q.To.UTC(), Simulated: q.Simulated,
		Rows: make([]map[string]any, 0, len(rows))}
	for _, r := range rows {
		doc.Rows = append(doc.Rows, rowJSON(q.By, r))
	}
	t := rowJSON(q.By, total(rows))
	delete(t, q.By)
	doc.Total = t
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func writeReportTable(w io.Writer, q reportQuery, rows []reportRow, source string) error {
	money := ""
	if q.Currency != "" {
		money = ", money in " + q.Currency
	}
	fmt.Fprintf(w, "deadlabour report by %s, %s to %s (%s%s)\n", q.By,
		q.From.Format(time.RFC3339), q.To.Format(time.RFC3339), source, money)
	if len(rows) == 0 {
		msg := "no request records in this period"
		if !q.Simulated {
			msg += " (records written under --simulate are left out; add --simulated to count them)"
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	}
	all := append(append(make([]reportRow, 0, len(rows)+1), rows...), total(rows))
	// Columns no row has are left out (the TOTAL row has every field some
	// row has).
	var cols []reportColumn
	for _, c := range reportColumns {
		if c.header == "" {
			continue
		}
		if _, ok := all[len(all)-1].Sums[c.field]; ok {
			cols = append(cols, c)
		}
	}
	derived := derivedColumns[:0:0]
	for _, d := range derivedColumns {
		if _, ok := d.f(all[len(all)-1]); ok {
			derived = append(derived, d)
		}
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\trequests\ttokens\t", q.By)
	for _, c := range cols {
		fmt.Fprintf(tw, "%s\t", c.header)
	}
	for _, d := range derived {
		fmt.Fprintf(tw, "%s\t", d.header)
	}
	fmt.Fprintln(tw)
	cell := func(v float64, ok bool) string {
		switch {
		case !ok:
			return "-"
		case v == math.Trunc(v) && math.Abs(v) < 1e15:
			return strconv.FormatFloat(v, 'f', 0, 64)
		}
		return strconv.FormatFloat(v, 'g', 5, 64)
	}
	for _, r := range all {
		key := r.Key
		if key == "" {
			key = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t", key, cell(r.Requests, true), cell(r.tokens()))
		for _, c := range cols {
			v, ok := r.Sums[c.field]
			fmt.Fprintf(tw, "%s\t", cell(v/c.scale, ok))
		}
		for _, d := range derived {
			fmt.Fprintf(tw, "%s\t", cell(d.f(r)))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
