package report

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/schema"
)

// Data is what a source reads for a report: the records' sums per group,
// the idle ledger per node and share, the GPU models of each node, and,
// when Query.Bucket is set, the sums per time bucket.
type Data struct {
	Rows []Row
	// Idle is deadlabour_idle summed per node, share and currency (Key is
	// the node, Share the tag share).
	Idle []IdleRow
	// GPUs are the GPU models of deadlabour_gpu (its tag gpu_name) per
	// node.
	GPUs map[string][]GPU
	// Series: sums of seriesFields per bucket and model; idle buckets have
	// Idle set and no model. Only when Query.Bucket > 0.
	Series []Bucket
	// Methods and Factors are the distinct method_version and factors
	// values of the records.
	Methods, Factors []string
}

// GPU is a GPU model as deadlabour_gpu names it, and its memory size
// (0: unknown).
type GPU struct {
	Name     string
	MemBytes uint64
}

// addGPU notes a GPU model of host.
func (d *Data) addGPU(host, name string, mem uint64) {
	if name == "" {
		return
	}
	if d.GPUs == nil {
		d.GPUs = map[string][]GPU{}
	}
	for i, g := range d.GPUs[host] {
		if g.Name == name {
			d.GPUs[host][i].MemBytes = max(g.MemBytes, mem)
			return
		}
	}
	d.GPUs[host] = append(d.GPUs[host], GPU{name, mem})
}

// IdleRow is one node's idle of one share, in one currency.
type IdleRow struct {
	Host, Share, Currency string
	Sums                  map[string]float64
}

// Bucket is one time bucket's sums of one model (or of idle).
type Bucket struct {
	Start time.Time
	Model string
	Idle  bool
	Sums  map[string]float64
}

// idleFields are the summed fields of deadlabour_idle that a request's
// plain fields carry too: the quantities whose totals reconcile.
func idleFields() []string {
	return []string{"it_energy_j", "facility_energy_j", "co2e_g", "co2e_market_g", "embodied_co2e_g",
		"water_l", "water_onsite_l", "water_offsite_l", "energy_cost", "depreciation_cost", "dead_labour_cost"}
}

// seriesFields are summed per time bucket, for the HTML report's charts.
func seriesFields() []string {
	return []string{"facility_energy_j", "co2e_g", "co2e_market_g", "prompt_tokens", "completion_tokens"}
}

// overcapacity says whether an idle share is one no record carries.
func overcapacity(share string) bool { return share != schema.IdleAbsorbed }

// OneCurrency merges the data's rows and idle into one currency: money in
// two currencies is never summed. Records without a currency (written
// before the tag) count with the one currency there is.
func (d *Data) OneCurrency() (string, error) {
	var currencies []string
	note := func(c string) {
		if c != "" && !slices.Contains(currencies, c) {
			currencies = append(currencies, c)
		}
	}
	for _, r := range d.Rows {
		note(r.Currency)
	}
	for _, r := range d.Idle {
		note(r.Currency)
	}
	if len(currencies) > 1 {
		sort.Strings(currencies)
		return "", fmt.Errorf("the records are in %d currencies (%s): money in different currencies cannot be summed; "+
			"report one at a time with --currency %s", len(currencies), strings.Join(currencies, ", "), currencies[0])
	}
	currency := ""
	if len(currencies) == 1 {
		currency = currencies[0]
	}
	set := rowSet{}
	for _, r := range d.Rows {
		set.addRow(r.Key, currency, r)
	}
	d.Rows = set.sorted()
	idle := map[[2]string]*IdleRow{}
	for _, r := range d.Idle {
		k := [2]string{r.Host, r.Share}
		if idle[k] == nil {
			idle[k] = &IdleRow{Host: r.Host, Share: r.Share, Currency: currency, Sums: map[string]float64{}}
		}
		for f, v := range r.Sums {
			idle[k].Sums[f] += v
		}
	}
	d.Idle = d.Idle[:0]
	for _, r := range idle {
		d.Idle = append(d.Idle, *r)
	}
	sort.Slice(d.Idle, func(i, j int) bool {
		a, b := d.Idle[i], d.Idle[j]
		return a.Host < b.Host || (a.Host == b.Host && a.Share < b.Share)
	})
	return currency, nil
}

// idleRow adds the idle of the nodes and shares keep accepts into a Row
// (no requests), keyed key.
func (d *Data) idleRow(key string, keep func(IdleRow) bool) (Row, bool) {
	r := Row{Key: key, Sums: map[string]float64{}, hostEmbodied: map[string]float64{}}
	found := false
	for _, i := range d.Idle {
		if !keep(i) {
			continue
		}
		found = true
		for f, v := range i.Sums {
			r.Sums[f] += v
		}
		r.hostEmbodied[i.Host] += i.Sums["embodied_co2e_g"]
	}
	return r, found
}

// hosts are the nodes the idle ledger names.
func (d *Data) idleHosts() []string {
	var out []string
	for _, i := range d.Idle {
		if !slices.Contains(out, i.Host) {
			out = append(out, i.Host)
		}
	}
	return out
}

// addDistinct adds v to a sorted set of distinct strings.
func addDistinct(set []string, v string) []string {
	if v == "" || slices.Contains(set, v) {
		return set
	}
	set = append(set, v)
	slices.Sort(set)
	return set
}

// bucketStart is the start of t's bucket, aligned to the Unix epoch as
// InfluxQL's GROUP BY time() aligns them.
func bucketStart(t time.Time, bucket time.Duration) time.Time {
	n := t.UnixNano()
	m := n % int64(bucket)
	if m < 0 {
		m += int64(bucket)
	}
	return time.Unix(0, n-m).UTC()
}

// sortSeries orders buckets by time, then model, idle last.
func sortSeries(s []Bucket) {
	sort.Slice(s, func(i, j int) bool {
		a, b := s[i], s[j]
		switch {
		case !a.Start.Equal(b.Start):
			return a.Start.Before(b.Start)
		case a.Idle != b.Idle:
			return b.Idle
		}
		return a.Model < b.Model
	})
}

// sortedKeys are the keys of m, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
