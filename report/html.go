package report

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/schema"
)

// BucketFor is the time bucket of the HTML report's charts for a period:
// the shortest of a few round lengths that gives at most 60 buckets.
func BucketFor(period time.Duration) time.Duration {
	for _, b := range []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour,
		3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		if period/b <= 60 {
			return b
		}
	}
	return 7 * 24 * time.Hour
}

// palette colours a chart's series; idle is grey.
var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"}

const idleColour = "#bab0ac"

// headline is one figure of the report's head: active, and total with idle.
type headline struct {
	Label, Scope, Unit string
	Active, Total      string
	Range              string // the embodied range, where known
}

// intensity is a line of the intensities table.
type intensity struct {
	Key                                     string
	JPerToken, WhPerReq, GPerReq, SCI, SCIk string
}

type htmlPage struct {
	R                       *Report
	Period, Generated       string
	Heads                   []headline
	Energy, CO2e, IdleChart template.HTML
	Intensities             []intensity
	IdleNote                string
}

// WriteHTML writes the report as one self-contained HTML page: inline CSS
// and SVG charts, no script, nothing fetched.
func WriteHTML(w io.Writer, r *Report) error {
	p := htmlPage{R: r, Generated: time.Now().UTC().Format(time.RFC3339),
		Period: fmt.Sprintf("%s to %s (%s)", r.Query.From.UTC().Format(time.RFC3339), r.Query.To.UTC().Format(time.RFC3339), span(r.Query.To.Sub(r.Query.From)))}
	cur := r.Query.Currency
	if cur == "" {
		cur = "money"
	}
	tok, _ := r.Active.tokens()
	p.Heads = []headline{
		{Label: "requests", Active: num(r.Active.Requests), Total: num(r.Active.Requests)},
		{Label: "tokens", Active: num(tok), Total: num(tok)},
		r.head("facility energy", "", "kWh", "facility_energy_j", 3.6e6),
		r.head("CO2e, location-based", schema.Scope("co2e_g"), "kg", "co2e_g", 1000),
		r.head("CO2e, market-based", schema.Scope("co2e_market_g"), "kg", "co2e_market_g", 1000),
		r.head("embodied CO2e", schema.Scope("embodied_co2e_g"), "kg", "embodied_co2e_g", 1000),
		r.head("water", "", "L", "water_l", 1),
		r.head("dead-labour cost", "", cur, "dead_labour_cost", 1),
	}
	p.Energy = timeChart(r.Series, "facility_energy_j", 3600, "Wh")
	p.CO2e = timeChart(r.Series, "co2e_g", 1, "g CO2e")
	p.IdleChart, p.IdleNote = idleChart(r)
	for _, row := range append(append([]Row{}, r.Rows...), r.Active, r.Meters) {
		if row.Key == r.Meters.Key && !r.HasIdle {
			continue
		}
		p.Intensities = append(p.Intensities, intensity{row.Key,
			orDash(row.jPerToken()), orDash(row.whPerRequest()), orDash(row.co2ePerRequest()),
			orDash(row.sciPerRequest()), orDash(row.sciPer1kTokens())})
	}
	return pageTemplate.Execute(w, p)
}

// head is a headline of a summed field, in unit (value / scale).
func (r *Report) head(label, scope, unit, field string, scale float64) headline {
	h := headline{Label: label, Scope: scope, Unit: unit, Active: "-", Total: "-"}
	if v, ok := r.Active.Sums[field]; ok {
		h.Active = num(v / scale)
	}
	if v, ok := r.Meters.Sums[field]; ok && r.HasIdle {
		h.Total = num(v / scale)
	}
	if field == "embodied_co2e_g" {
		row := r.Active
		if r.HasIdle {
			row = r.Meters
		}
		if row.embodied != nil {
			h.Range = fmt.Sprintf("catalogue range %s–%s", num(row.embodied[0]/scale), num(row.embodied[1]/scale))
		}
	}
	return h
}

// chart geometry
const (
	chartW, chartH         = 860.0, 260.0
	padL, padR, padT, padB = 70.0, 170.0, 10.0, 30.0
)

// timeChart draws field over time as stacked bars, one path per model and
// one for idle, with a legend.
func timeChart(series []Bucket, field string, scale float64, unit string) template.HTML {
	if len(series) == 0 {
		return template.HTML(`<p class="note">no time series in this period</p>`)
	}
	var starts []time.Time
	var names []string
	vals := map[string]map[int64]float64{}
	for _, b := range series {
		name := b.Model
		if b.Idle {
			name = "idle (all shares)"
		} else if name == "" {
			name = "(none)"
		}
		if vals[name] == nil {
			vals[name] = map[int64]float64{}
			if !b.Idle {
				names = append(names, name)
			}
		}
		vals[name][b.Start.UnixNano()] += b.Sums[field] / scale
		if len(starts) == 0 || !starts[len(starts)-1].Equal(b.Start) {
			starts = append(starts, b.Start)
		}
	}
	if vals["idle (all shares)"] != nil {
		names = append(names, "idle (all shares)")
	}
	maxV := 0.0
	for _, t := range starts {
		s := 0.0
		for _, n := range names {
			s += math.Max(0, vals[n][t.UnixNano()])
		}
		maxV = math.Max(maxV, s)
	}
	if maxV <= 0 {
		maxV = 1
	}
	plotW, plotH := chartW-padL-padR, chartH-padT-padB
	bw := plotW / float64(len(starts))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s over time">`, chartW, chartH, template.HTMLEscapeString(unit))
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="axis"/>`, padL, padT+plotH, padL+plotW, padT+plotH)
	for i := 0; i <= 4; i++ {
		y := padT + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="grid"/><text x="%.1f" y="%.1f" class="tick" text-anchor="end">%s</text>`,
			padL, y, padL+plotW, y, padL-6, y+4, num(maxV*float64(i)/4))
	}
	fmt.Fprintf(&b, `<text x="12" y="%.1f" class="tick" transform="rotate(-90 12 %.1f)" text-anchor="middle">%s</text>`, padT+plotH/2, padT+plotH/2, template.HTMLEscapeString(unit))
	base := make([]float64, len(starts))
	for k, n := range names {
		colour := palette[k%len(palette)]
		if strings.HasPrefix(n, "idle") {
			colour = idleColour
		}
		var d strings.Builder
		for i, t := range starts {
			v := math.Max(0, vals[n][t.UnixNano()])
			if v == 0 {
				continue
			}
			h := plotH * v / maxV
			x := padL + bw*float64(i) + bw*0.1
			y := padT + plotH - base[i] - h
			fmt.Fprintf(&d, "M%.1f %.1fh%.1fv%.1fh%.1fZ", x, y, bw*0.8, h, -bw*0.8)
			base[i] += h
		}
		fmt.Fprintf(&b, `<path d="%s" fill="%s"><title>%s</title></path>`, d.String(), colour, template.HTMLEscapeString(n))
		ly := padT + 14*float64(k) + 6
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/><text x="%.1f" y="%.1f" class="legend">%s</text>`,
			chartW-padR+12, ly, colour, chartW-padR+26, ly+9, template.HTMLEscapeString(shorten(n, 24)))
	}
	for i, t := range starts {
		if len(starts) <= 8 || i%(len(starts)/6+1) == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="tick" text-anchor="middle">%s</text>`, padL+bw*(float64(i)+0.5), chartH-10, t.Format("01-02 15:04"))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// idleChart is one bar of the meters' facility energy: active, idle
// absorbed, overcapacity.
func idleChart(r *Report) (template.HTML, string) {
	all, ok := r.Meters.Sums["facility_energy_j"]
	if !r.HasIdle || !ok || all <= 0 {
		return "", "no deadlabour_idle points in this period: the totals are the active part only"
	}
	parts := []struct {
		name, colour string
		v            float64
	}{
		{"active (requests)", palette[0], r.Active.Sums["facility_energy_j"]},
		{"idle absorbed by requests", palette[5], r.Absorbed.Sums["facility_energy_j"]},
		{"idle overcapacity", idleColour, r.Overcapacity.Sums["facility_energy_j"]},
	}
	var b strings.Builder
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 860 70" role="img" aria-label="idle share">`)
	x := 10.0
	for i, p := range parts {
		w := 840 * math.Max(0, p.v) / all
		fmt.Fprintf(&b, `<path d="M%.1f 5h%.1fv30h%.1fZ" fill="%s"><title>%s</title></path>`, x, w, -w, p.colour, p.name)
		fmt.Fprintf(&b, `<rect x="%d" y="48" width="10" height="10" fill="%s"/><text x="%d" y="57" class="legend">%s %.1f %%</text>`,
			10+i*280, p.colour, 24+i*280, p.name, 100*p.v/all)
		x += w
	}
	b.WriteString(`</svg>`)
	note := fmt.Sprintf("%.1f %% of the facility energy the meters measured was idle; %.1f %% was overcapacity (no request ran).",
		100*(all-parts[0].v)/all, 100*parts[2].v/all)
	return template.HTML(b.String()), note
}

func shorten(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
