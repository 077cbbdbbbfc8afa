package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"
)

// total adds every row: the fleet's totals (under --by gpu, too: the
// shares add up). The rows are in one currency (OneCurrency).
func total(rows []Row) Row {
	t := Row{Key: "TOTAL", Sums: map[string]float64{}}
	for _, r := range rows {
		t.add(r, 1)
	}
	return t
}

// derivedColumn is a figure computed from the sums.
type derivedColumn struct {
	name, header string
	f            func(Row) (float64, bool)
}

// derivedColumns are computed from the sums, in output order.
func derivedColumns() []derivedColumn {
	return []derivedColumn{
		{"j_per_token", "J/token", Row.jPerToken},
		{"wh_per_request", "Wh/request", Row.whPerRequest},
		{"idle_share", "idle share", Row.idleShare},
	}
}

// WriteCSV writes the rows as CSV: a header, then a line per row.
func WriteCSV(w io.Writer, q Query, rows []Row) error {
	cw := csv.NewWriter(w)
	header := []string{q.By, "requests"}
	for _, c := range columns() {
		header = append(header, c.field)
	}
	for _, d := range derivedColumns() {
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
		for _, c := range columns() {
			v, ok := r.Sums[c.field]
			rec = append(rec, num(v, ok))
		}
		for _, d := range derivedColumns() {
			rec = append(rec, num(d.f(r)))
		}
		cw.Write(append(rec, q.Currency))
	}
	cw.Flush()
	return cw.Error()
}

// jsonDoc is the --format json document.
type jsonDoc struct {
	By        string           `json:"by"`
	Currency  string           `json:"currency"` // of the money figures; "" when the records do not say
	From      time.Time        `json:"from"`
	Until     time.Time        `json:"until"`
	Simulated bool             `json:"simulated_included"`
	Rows      []map[string]any `json:"rows"`
	Total     map[string]any   `json:"total"`
}

func rowJSON(by string, r Row) map[string]any {
	m := map[string]any{by: r.Key, "requests": r.Requests}
	for _, c := range columns() {
		if v, ok := r.Sums[c.field]; ok {
			m[c.field] = v
		} else {
			m[c.field] = nil
		}
	}
	for _, d := range derivedColumns() {
		if v, ok := d.f(r); ok {
			m[d.name] = v
		} else {
			m[d.name] = nil
		}
	}
	return m
}

// WriteJSON writes the rows and their total as one JSON document.
func WriteJSON(w io.Writer, q Query, rows []Row) error {
	doc := jsonDoc{By: q.By, Currency: q.Currency, From: q.From.UTC(), Until: q.To.UTC(), Simulated: q.Simulated,
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

// WriteTable writes the rows and their total as a table for people,
// under a heading naming the period and source.
func WriteTable(w io.Writer, q Query, rows []Row, source string) error {
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
	all := append(append(make([]Row, 0, len(rows)+1), rows...), total(rows))
	// Columns no row has are left out (the TOTAL row has every field some
	// row has).
	var cols []column
	for _, c := range columns() {
		if c.header == "" {
			continue
		}
		if _, ok := all[len(all)-1].Sums[c.field]; ok {
			cols = append(cols, c)
		}
	}
	derived := derivedColumns()[:0:0]
	for _, d := range derivedColumns() {
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
