package report

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/config"
)

// Query is what a report asks of its record source.
type Query struct {
	From, To  time.Time // [From, To)
	By        string    // model, tenant, gpu, node, upstream, namespace or pod (Dimension)
	Simulated bool      // include records written under --simulate
	Currency  string    // only records tagged with this currency; "" all
	// Bucket, when set, asks for sums per time bucket of this length
	// (Data.Series), for the HTML report's charts.
	Bucket time.Duration
}

// Source totals deadlabour_request records per group and currency
// (the tag currency; "" for records written before it), and
// deadlabour_idle per node and share. Sources: influxSource (InfluxQL) and
// lineProtocolSource (the spool, a file).
type Source interface {
	Read(ctx context.Context, q Query) (*Data, error)
}

// Dimension is the record's tag that --by groups by, and whether by is one
// (model, tenant, gpu, node, upstream, namespace or pod); gpu, namespace
// and pod are carried as string fields, not tags (see fieldDims), and
// their tag is "".
func Dimension(by string) (tag string, ok bool) {
	d, ok := dimensionOf(by)
	return d.tag, ok
}

// dimension is what --by groups by: a tag, which InfluxQL groups by, or
// string fields, which it cannot.
type dimension struct {
	tag    string   // the tag; "" for a field dimension
	fields []string // the fields whose values make a record's key
	// keys are the keys a record of node host with these values of fields
	// ("" where it lacks one) counts under, and the share of the record
	// each key gets.
	keys func(host string, vals []string) (keys []string, share float64)
}

// fieldDims are the dimensions records carry as string fields. Records
// without the field group under "", shown as (none).
var fieldDims = map[string]dimension{
	"gpu":       {fields: []string{"gpus"}, keys: func(host string, v []string) ([]string, float64) { return gpuShares(host, v[0]) }},
	"namespace": {fields: []string{"namespace"}, keys: func(_ string, v []string) ([]string, float64) { return []string{v[0]}, 1 }},
	"pod":       {fields: []string{"namespace", "pod"}, keys: podKey},
}

func dimensionOf(by string) (dimension, bool) {
	switch by {
	case "model", "tenant", "upstream":
		return dimension{tag: by}, true
	case "node":
		return dimension{tag: "host"}, true
	}
	d, ok := fieldDims[by]
	return d, ok
}

// recordKeys are the keys a record with these tags and string fields counts
// under, and each key's share of it.
func (d dimension) recordKeys(tags, strs map[string]string) ([]string, float64) {
	if d.keys == nil {
		return []string{tags[d.tag]}, 1
	}
	vals := make([]string, len(d.fields))
	for i, f := range d.fields {
		vals[i] = strs[f]
	}
	return d.keys(tags["host"], vals)
}

// podKey is a pod's key, namespace/pod, as pod names repeat across
// namespaces; "" for a record without a pod.
func podKey(_ string, v []string) ([]string, float64) {
	if v[1] == "" {
		return []string{""}, 1
	}
	return []string{v[0] + "/" + v[1]}, 1
}

// column is one summed deadlabour_request field.
type column struct {
	field string // the field, and its name in CSV and JSON (schema units)
	// header and scale are for the table: value / scale, under header;
	// "¤" in header stands for the currency.
	header string
	scale  float64
}

// columns are the fields a report sums, in output order. Fields no
// record in the period has (older records, features not configured) are
// absent: empty in CSV, null in JSON, left out of the table.
func columns() []column {
	return []column{
		{"prompt_tokens", "prompt tokens", 1},
		{"completion_tokens", "completion tokens", 1},
		{"gpu_energy_j", "GPU Wh", 3600},
		{"host_energy_j", "host Wh", 3600},
		{"static_energy_j", "static Wh", 3600},
		{"it_energy_j", "IT Wh", 3600},
		{"facility_energy_j", "facility Wh", 3600},
		{"co2e_g", "CO2e g", 1},
		{"co2e_market_g", "CO2e market g", 1},
		{"embodied_co2e_g", "embodied g", 1},
		{"water_l", "water L", 1},
		{"water_onsite_l", "water onsite L", 1},
		{"water_offsite_l", "water offsite L", 1},
		{"energy_cost", "energy ¤", 1},
		{"depreciation_cost", "depreciation ¤", 1},
		{"training_cost", "training ¤", 1},
		{"training_co2e_g", "training CO2e g", 1},
		{"dead_labour_cost", "dead labour ¤", 1},
		{"living_labour_s", "living labour h", 3600},
		{"loaded_gpu_energy_j", "loaded GPU Wh", 3600},
		{"loaded_it_energy_j", "loaded IT Wh", 3600},
		{"loaded_facility_energy_j", "loaded facility Wh", 3600},
		{"loaded_co2e_g", "loaded CO2e g", 1},
		{"loaded_energy_cost", "loaded energy ¤", 1},
		{"loaded_depreciation_cost", "loaded depreciation ¤", 1},
		{"loaded_dead_labour_cost", "loaded dead labour ¤", 1},
	}
}

// Fields are the deadlabour_request fields a report sums, in output
// order: the columns of its CSV and the keys of its JSON, after the group
// and requests.
func Fields() []string {
	cols := columns()
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.field
	}
	return out
}

// Row is one group's totals.
type Row struct {
	Key      string
	Currency string // of the money sums; "" when the records do not say
	// Requests is count(request_id); a fraction under --by gpu, where a
	// request on n GPUs counts 1/n on each.
	Requests float64
	Sums     map[string]float64 // by field; only fields some record had
	// hostEmbodied is embodied_co2e_g by node, for the embodied range
	// (Ranges).
	hostEmbodied map[string]float64
	// embodied is the low–high range of embodied_co2e_g (Report.Build);
	// nil: unknown.
	embodied *[2]float64
}

// add adds o's totals times share.
func (r *Row) add(o Row, share float64) {
	r.Requests += o.Requests * share
	if r.Sums == nil {
		r.Sums = map[string]float64{}
	}
	for f, v := range o.Sums {
		r.Sums[f] += v * share
	}
	if r.hostEmbodied == nil {
		r.hostEmbodied = map[string]float64{}
	}
	for h, v := range o.hostEmbodied {
		r.hostEmbodied[h] += v * share
	}
}

// less is r less o (nil: nothing), for what remains of a total; ok is
// false where nothing does (no request). A sum that is only rounding
// error (within 1e-9 of r's) is 0.
func (r Row) less(o *Row) (rest Row, ok bool) {
	rest = Row{Requests: r.Requests, Sums: map[string]float64{}}
	if o != nil {
		rest.Requests -= o.Requests
	}
	for f, v := range r.Sums {
		if o != nil {
			v -= o.Sums[f]
		}
		if math.Abs(v) <= 1e-9*math.Abs(r.Sums[f]) {
			v = 0
		}
		rest.Sums[f] = v
	}
	return rest, rest.Requests >= 0.5
}

// derived figures, from the sums; ok is false where a divisor is missing.
func (r Row) tokens() (float64, bool) {
	p, okp := r.Sums["prompt_tokens"]
	c, okc := r.Sums["completion_tokens"]
	return p + c, okp || okc
}

// jPerToken is measured GPU energy per token (prompt and completion). Records
// whose tokens are unknown add energy and no tokens, so it is an upper bound
// where usage_source = 'unknown' records exist.
func (r Row) jPerToken() (float64, bool) {
	t, ok := r.tokens()
	e, oke := r.Sums["gpu_energy_j"]
	return safeDiv(e, t, ok && oke)
}

// whPerRequest is facility energy per request in Wh.
func (r Row) whPerRequest() (float64, bool) {
	e, ok := r.Sums["facility_energy_j"]
	return safeDiv(e/3600, r.Requests, ok)
}

// idleShare is the part of the loaded IT energy that is idle capacity: 1 -
// active / loaded. It needs the loaded fields (attribution.idle_window).
func (r Row) idleShare() (float64, bool) {
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
type rowSet map[[2]string]*Row

// add adds o, the sums of records of node host, times share.
func (s rowSet) add(key, currency, host string, o Row, share float64) {
	o.hostEmbodied = map[string]float64{host: o.Sums["embodied_co2e_g"]}
	s.get(key, currency).add(o, share)
}

// addRow adds o, whose hostEmbodied is set already.
func (s rowSet) addRow(key, currency string, o Row) { s.get(key, currency).add(o, 1) }

func (s rowSet) get(key, currency string) *Row {
	r := s[[2]string{key, currency}]
	if r == nil {
		r = &Row{Key: key, Currency: currency, Sums: map[string]float64{}, hostEmbodied: map[string]float64{}}
		s[[2]string{key, currency}] = r
	}
	return r
}

// sorted returns the rows ordered by key, then currency.
func (s rowSet) sorted() []Row {
	out := make([]Row, 0, len(s))
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

// ParseWhen reads --since and --until: a duration before now (90m, 24h,
// 7d) or an RFC 3339 time.
func ParseWhen(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := config.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--%s %q: want a duration before now (24h, 7d) or a time (2025-01-31T00:00:00Z)", flag, s)
	}
	return now.Add(-d), nil
}

// Token is the InfluxDB token: tokenFile's content when set, else the
// config's token_env or token_file.
func Token(cfg *config.Config, tokenFile string) (string, error) {
	if tokenFile == "" {
		return cfg.InfluxToken(os.Getenv)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("--influx-token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
