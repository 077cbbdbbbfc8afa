package report

import "github.com/deadlabour/deadlabour/config"

// Report is a report's figures, ready to write.
type Report struct {
	Query  Query
	Source string // where the records came from, for headings
	Rows   []Row  // per group: the active part (Σ records)
	// Active is Σ Rows; Absorbed and Overcapacity the idle of the whole
	// fleet (share absorbed; unabsorbed and unmetered), with no requests;
	// Meters = Active + all idle for the fields idle carries (idleFields),
	// with Active's requests and tokens: what the meters measured.
	Active, Absorbed, Overcapacity, Meters Row
	HasIdle                                bool
	// IdleByNode, under --by node: each node's [absorbed, overcapacity]
	// (keyed by node).
	IdleByNode       map[string][2]Row
	Methods, Factors []string
	Series           []Bucket
}

// Build totals a source's data (in one currency: Data.OneCurrency). cfg
// gives the hardware catalogue for the embodied range (nil: the built-in
// catalogue).
func Build(q Query, source string, d *Data, cfg *config.Config) *Report {
	r := &Report{Query: q, Source: source, Rows: d.Rows, Methods: d.Methods, Factors: d.Factors, Series: d.Series}
	r.Active = total(d.Rows)
	r.Active.Key = "TOTAL active"
	var abs, over bool
	r.Absorbed, abs = d.idleRow("idle absorbed", func(i IdleRow) bool { return !overcapacity(i.Share) })
	r.Overcapacity, over = d.idleRow("idle overcapacity", func(i IdleRow) bool { return overcapacity(i.Share) })
	r.HasIdle = abs || over
	r.Meters = Row{Key: "TOTAL (meters)", Requests: r.Active.Requests, Sums: map[string]float64{}, hostEmbodied: map[string]float64{}}
	for _, f := range []string{"prompt_tokens", "completion_tokens"} {
		if v, ok := r.Active.Sums[f]; ok {
			r.Meters.Sums[f] = v
		}
	}
	for _, part := range []Row{r.Active, r.Absorbed, r.Overcapacity} {
		for _, f := range idleFields() {
			if v, ok := part.Sums[f]; ok {
				r.Meters.Sums[f] += v
			}
		}
		for h, v := range part.hostEmbodied {
			r.Meters.hostEmbodied[h] += v
		}
	}
	if q.By == "node" && r.HasIdle {
		r.IdleByNode = map[string][2]Row{}
		for _, h := range d.idleHosts() {
			a, _ := d.idleRow(h, func(i IdleRow) bool { return i.Host == h && !overcapacity(i.Share) })
			o, _ := d.idleRow(h, func(i IdleRow) bool { return i.Host == h && overcapacity(i.Share) })
			r.IdleByNode[h] = [2]Row{a, o}
		}
	}
	if cfg == nil {
		cfg = &config.Config{}
	}
	ratios := embodiedRatios(cfg, d.GPUs)
	for _, row := range r.all() {
		row.setRange(ratios)
	}
	for h, p := range r.IdleByNode {
		p[0].setRange(ratios)
		p[1].setRange(ratios)
		r.IdleByNode[h] = p
	}
	return r
}

// all are every row of the report, for updates.
func (r *Report) all() []*Row {
	out := []*Row{&r.Active, &r.Absorbed, &r.Overcapacity, &r.Meters}
	for i := range r.Rows {
		out = append(out, &r.Rows[i])
	}
	return out
}

// embodiedRatios are, per node, the low/point and high/point ratios of its
// GPUs' embodied carbon per slot (GPU and server share) in the catalogue;
// a node with several GPU models takes the mean of theirs. Nodes whose GPU
// models are unknown or have no range are left out.
func embodiedRatios(cfg *config.Config, gpus map[string][]GPU) map[string][2]float64 {
	out := map[string][2]float64{}
	for host, models := range gpus {
		var lo, hi float64
		n := 0
		for _, g := range models {
			h, ok := cfg.HardwareFor(g.Name, g.MemBytes)
			point := h.SlotEmbodiedKg()
			if !ok || point <= 0 {
				continue
			}
			lo += (h.EmbodiedKgLow + h.ServerEmbodiedKgCO2e) / point
			hi += (h.EmbodiedKgHigh + h.ServerEmbodiedKgCO2e) / point
			n++
		}
		if n > 0 {
			out[host] = [2]float64{lo / float64(n), hi / float64(n)}
		}
	}
	return out
}

// setRange sets the row's embodied range: each node's embodied carbon
// times its ratios; nodes without a range count at the point value. No
// node with a range: no range.
func (r *Row) setRange(ratios map[string][2]float64) {
	if _, ok := r.Sums["embodied_co2e_g"]; !ok {
		return
	}
	lo, hi, known := 0.0, 0.0, false
	for h, e := range r.hostEmbodied {
		rt, ok := ratios[h]
		if !ok {
			rt = [2]float64{1, 1}
		}
		known = known || ok
		lo += e * rt[0]
		hi += e * rt[1]
	}
	if known {
		r.embodied = &[2]float64{lo, hi}
	}
}
