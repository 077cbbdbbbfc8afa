package report

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"time"
)

// total adds every row: the fleet's totals (under --by gpu, too: the
// shares add up). The rows are in one currency (Data.OneCurrency).
func total(rows []Row) Row {
	t := Row{Key: "TOTAL", Sums: map[string]float64{}, hostEmbodied: map[string]float64{}}
	for _, r := range rows {
		t.add(r, 1)
	}
	return t
}

// line is a line of CSV or the table: its kind (CSV's column line) and row.
type line struct {
	kind string // group, active_total, idle_absorbed, idle_overcapacity, total
	row  Row
}

// lines are the report's rows, then its totals: active, idle (per node
// under --by node, then for the fleet) and the meters' total.
func (r *Report) lines() []line {
	out := make([]line, 0, len(r.Rows)+4)
	for _, row := range r.Rows {
		out = append(out, line{"group", row})
	}
	out = append(out, line{"active_total", r.Active})
	if !r.HasIdle {
		return out
	}
	for _, h := range sortedKeys(r.IdleByNode) {
		p := r.IdleByNode[h]
		p[0].Key, p[1].Key = h, h
		out = append(out, line{"idle_absorbed", p[0]}, line{"idle_overcapacity", p[1]})
	}
	return append(out, line{"idle_absorbed", r.Absorbed}, line{"idle_overcapacity", r.Overcapacity}, line{"total", r.Meters})
}

func numOK(v float64, ok bool) string {
	if !ok {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// WriteCSV writes the report as CSV: a header, a line per group, then
// the totals (column line says which: group, active_total, idle_absorbed,
// idle_overcapacity, total). Idle lines have no requests.
func WriteCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	header := []string{r.Query.By, "requests"}
	header = append(header, Fields()...)
	for _, d := range derivedColumns() {
		header = append(header, d.name)
	}
	cw.Write(append(header, "line", "currency"))
	for _, l := range r.lines() {
		requests := numOK(l.row.Requests, true)
		if isIdle(l.kind) {
			requests = ""
		}
		rec := []string{l.row.Key, requests}
		for _, f := range Fields() {
			v, ok := l.row.Sums[f]
			rec = append(rec, numOK(v, ok))
		}
		for _, d := range derivedColumns() {
			rec = append(rec, numOK(d.f(l.row)))
		}
		cw.Write(append(rec, l.kind, r.Query.Currency))
	}
	cw.Flush()
	return cw.Error()
}

func isIdle(kind string) bool { return kind == "idle_absorbed" || kind == "idle_overcapacity" }

// jsonDoc is the --format json document.
type jsonDoc struct {
	By        string           `json:"by"`
	Currency  string           `json:"currency"` // of the money figures; "" when the records do not say
	From      time.Time        `json:"from"`
	Until     time.Time        `json:"until"`
	Simulated bool             `json:"simulated_included"`
	Rows      []map[string]any `json:"rows"`
	// Total is the active total (Σ rows).
	Total map[string]any `json:"total"`
	// Idle is the idle ledger: absorbed, overcapacity and, under --by
	// node, by_node; Meters the active plus all idle; absent without idle.
	Idle    map[string]any `json:"idle,omitempty"`
	Meters  map[string]any `json:"meters,omitempty"`
	Methods []string       `json:"method_versions"`
	Factors []string       `json:"factors"`
}

func rowJSON(by string, r Row, requests bool) map[string]any {
	m := map[string]any{}
	if by != "" {
		m[by] = r.Key
	}
	if requests {
		m["requests"] = r.Requests
	}
	for _, f := range Fields() {
		if v, ok := r.Sums[f]; ok {
			m[f] = v
		} else if requests {
			m[f] = nil
		}
	}
	for _, d := range derivedColumns() {
		if v, ok := d.f(r); ok {
			m[d.name] = v
		} else if requests {
			m[d.name] = nil
		}
	}
	return m
}

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	q := r.Query
	doc := jsonDoc{By: q.By, Currency: q.Currency, From: q.From.UTC(), Until: q.To.UTC(), Simulated: q.Simulated,
		Rows: make([]map[string]any, 0, len(r.Rows)), Total: rowJSON("", r.Active, true),
		Methods: append([]string{}, r.Methods...), Factors: append([]string{}, r.Factors...)}
	for _, row := range r.Rows {
		doc.Rows = append(doc.Rows, rowJSON(q.By, row, true))
	}
	if r.HasIdle {
		doc.Idle = map[string]any{"absorbed": rowJSON("", r.Absorbed, false), "overcapacity": rowJSON("", r.Overcapacity, false)}
		if r.IdleByNode != nil {
			by := map[string]any{}
			for h, p := range r.IdleByNode {
				by[h] = map[string]any{"absorbed": rowJSON("", p[0], false), "overcapacity": rowJSON("", p[1], false)}
			}
			doc.Idle["by_node"] = by
		}
		doc.Meters = rowJSON("", r.Meters, true)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
