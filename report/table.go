package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// tableColumn is a column of the table: a sum or a derived figure.
type tableColumn struct {
	name, header string
	value        func(Row) (float64, bool)
}

// DefaultColumns are the table's columns without --columns: they fit 120
// characters.
var DefaultColumns = []string{"requests", "tokens", "facility_energy_j", "co2e_g",
	"dead_labour_cost", "j_per_token", "sci_g_per_request"}

// maxKey is the most characters of a group's name the table shows: a
// longer one keeps its end ("…Llama-3.1-70B-Instruct").
const maxKey = 36

// tableColumns are every column the table can show, by name: requests,
// tokens, the summed fields (in Wh, g, L, h or the currency) and the
// derived figures.
func tableColumns(currency string) []tableColumn {
	if currency == "" {
		currency = "money"
	}
	out := []tableColumn{
		{"requests", "requests", func(r Row) (float64, bool) { return r.Requests, r.Requests > 0 }},
		{"tokens", "tokens", Row.tokens},
	}
	for _, c := range columns() {
		c := c
		out = append(out, tableColumn{c.field, strings.ReplaceAll(c.header, "¤", currency), func(r Row) (float64, bool) {
			v, ok := r.Sums[c.field]
			return v / c.scale, ok
		}})
	}
	for _, d := range derivedColumns() {
		out = append(out, tableColumn{d.name, d.header, d.f})
	}
	return out
}

// ColumnNames are the names --columns accepts (and "all").
func ColumnNames() []string {
	var out []string
	for _, c := range tableColumns("") {
		out = append(out, c.name)
	}
	return out
}

// pickColumns resolves --columns: nil the defaults, ["all"] every one.
func pickColumns(names []string, currency string) ([]tableColumn, error) {
	all := tableColumns(currency)
	if len(names) == 1 && names[0] == "all" {
		return all, nil
	}
	if len(names) == 0 {
		names = DefaultColumns
	}
	var out []tableColumn
	for _, n := range names {
		i := slices.IndexFunc(all, func(c tableColumn) bool { return c.name == n })
		if i < 0 {
			return nil, fmt.Errorf("--columns: no column %q; want all or some of %s", n, strings.Join(ColumnNames(), ","))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// CheckColumns says whether --columns names only known columns.
func CheckColumns(names []string) error {
	_, err := pickColumns(names, "")
	return err
}

// WriteTable writes the report as a table for people, under a heading
// naming the period and source, with the totals and SCI below. cols are
// the columns by name (nil: DefaultColumns); columns no line has are left
// out.
func WriteTable(w io.Writer, r *Report, cols []string) error {
	q := r.Query
	money := ""
	if q.Currency != "" {
		money = ", money in " + q.Currency
	}
	fmt.Fprintf(w, "deadlabour report by %s, %s to %s (%s; %s%s)\n", q.By,
		q.From.UTC().Format(time.RFC3339), q.To.UTC().Format(time.RFC3339), span(q.To.Sub(q.From)), r.Source, money)
	if len(r.Rows) == 0 {
		msg := "no request records in this period"
		if !q.Simulated {
			msg += " (records written under --simulate are left out; add --simulated to count them)"
		}
		_, err := fmt.Fprintln(w, msg)
		return err
	}
	picked, err := pickColumns(cols, q.Currency)
	if err != nil {
		return err
	}
	lines := r.lines()
	var shown []tableColumn
	for _, c := range picked {
		if slices.ContainsFunc(lines, func(l line) bool { _, ok := c.value(l.row); return ok }) {
			shown = append(shown, c)
		}
	}
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\t", q.By)
	for _, c := range shown {
		fmt.Fprintf(tw, "%s\t", c.header)
	}
	fmt.Fprintln(tw)
	for _, l := range lines {
		key := l.row.Key
		switch {
		case key == "":
			key = "(none)"
		case l.kind == "idle_absorbed" && key != r.Absorbed.Key:
			key += " idle absorbed"
		case l.kind == "idle_overcapacity" && key != r.Overcapacity.Key:
			key += " idle overcapacity"
		}
		if r := []rune(key); len(r) > maxKey {
			key = "…" + string(r[len(r)-maxKey+1:])
		}
		fmt.Fprintf(tw, "%s\t", key)
		for _, c := range shown {
			v, ok := c.value(l.row)
			cell := "-"
			if ok {
				cell = num(v)
			}
			fmt.Fprintf(tw, "%s\t", cell)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		io.WriteString(w, strings.TrimRight(l, " \n"))
		if strings.HasSuffix(l, "\n") {
			io.WriteString(w, "\n")
		}
	}
	return r.writeNotes(w)
}

// writeNotes writes the SCI, the embodied range and the idle share under
// the table.
func (r *Report) writeNotes(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintln(&b)
	sci := func(row Row) string {
		pr, ok1 := row.sciPerRequest()
		pt, ok2 := row.sciPer1kTokens()
		return fmt.Sprintf("%s g/request, %s g/1k tokens", orDash(pr, ok1), orDash(pt, ok2))
	}
	fmt.Fprintf(&b, "SCI (ISO/IEC 21031: (E×I + M) per R; E×I = co2e_g, Scope 2 location-based; M = embodied_co2e_g, Scope 3):\n")
	fmt.Fprintf(&b, "  active (the software's share): %s\n", sci(r.Active))
	if lr, ok := r.Active.sciLoadedPerRequest(); ok {
		lt, okt := r.Active.sciLoadedPer1kTokens()
		fmt.Fprintf(&b, "  loaded (with the idle its requests absorbed): %s g/request, %s g/1k tokens\n", num(lr), orDash(lt, okt))
	}
	if r.HasIdle {
		fmt.Fprintf(&b, "  meters (all idle, overcapacity included): %s\n", sci(r.Meters))
	}
	if lo, ok := r.Active.embodiedLow(); ok {
		hi, _ := r.Active.embodiedHigh()
		fmt.Fprintf(&b, "embodied CO2e, catalogue low–high: active %s g (%s–%s)", num(r.Active.Sums["embodied_co2e_g"]), num(lo), num(hi))
		if mlo, ok := r.Meters.embodiedLow(); ok && r.HasIdle {
			mhi, _ := r.Meters.embodiedHigh()
			fmt.Fprintf(&b, ", total %s g (%s–%s)", num(r.Meters.Sums["embodied_co2e_g"]), num(mlo), num(mhi))
		}
		fmt.Fprintln(&b)
	}
	if r.HasIdle {
		if all, ok := r.Meters.Sums["facility_energy_j"]; ok && all > 0 {
			a, o := r.Absorbed.Sums["facility_energy_j"], r.Overcapacity.Sums["facility_energy_j"]
			fmt.Fprintf(&b, "idle: %.1f %% of facility energy (absorbed by requests %.1f %%, overcapacity %.1f %%)\n",
				100*(a+o)/all, 100*a/all, 100*o/all)
		}
	} else {
		fmt.Fprintln(&b, "idle: no deadlabour_idle points in this period (TOTAL is the active part only)")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return num(v)
}
