package main

// The table the demo prints: each model's figures read back from InfluxDB,
// the idle line, and the figures against their cited ranges.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// column is one figure of the table: an aggregate of deadlabour_request per
// model, and the deadlabour_idle field summed into the idle line. A figure
// the daemon adds to deadlabour_idle joins the idle line by naming it here.
type column struct {
	head    string
	request string  // InfluxQL aggregate over deadlabour_request
	idle    string  // deadlabour_idle field, summed over its devices; "": none
	gpuOnly bool    // the idle part is that of the GPUs alone (device != 'host')
	noTotal bool    // not summed into the total line (the loaded figures already hold idle)
	scale   float64 // from the stored unit to the printed one
	format  string
}

// row is one line of the table, in the stored units; NaN: not known.
type row struct {
	label string
	v     []float64
}

// printTable reads the per-model totals and the idle line back from
// InfluxDB and prints them, then each model's J per output token against
// its cited range.
func printTable(ctx context.Context, out io.Writer, influx string, ups []*upstream) error {
	var sel []string
	for i, c := range columns {
		sel = append(sel, fmt.Sprintf("%s AS c%d", c.request, i))
	}
	series, err := influxQuery(ctx, influx, "SELECT "+strings.Join(sel, ", ")+" FROM deadlabour_request GROUP BY model")
	if err != nil {
		return err
	}
	var rows []row
	for _, s := range series {
		r := row{label: s.Tags["model"], v: make([]float64, len(columns))}
		for i := range columns {
			r.v[i] = math.NaN()
			if f, ok := s.Values[0][i+1].(float64); ok {
				r.v[i] = f
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return errors.New("InfluxDB holds no request records: see the daemon log")
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].label < rows[j].label })
	idle, err := idleRow(ctx, influx)
	if err != nil {
		return err
	}
	total := row{label: "total", v: make([]float64, len(columns))}
	for i, c := range columns {
		for _, r := range append(rows, idle) {
			total.v[i] += zeroNaN(r.v[i])
		}
		if c.noTotal || (c.idle != "" && math.IsNaN(idle.v[i])) {
			total.v[i] = math.NaN()
		}
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	var head []string
	for _, c := range columns {
		head = append(head, c.head)
	}
	fmt.Fprintf(tw, "model\t%s\tJ/out tok\tGPU Wh/req\t\n", strings.Join(head, "\t"))
	for _, r := range append(append(rows, idle), total) {
		fmt.Fprintf(tw, "%s\t", r.label)
		for i, c := range columns {
			fmt.Fprintf(tw, "%s\t", figure(c.format, r.v[i]*c.scale))
		}
		j, wh := r.v[colGPU]/r.v[colOutput], r.v[colGPU]/3600/r.v[colRequests]
		if r.label == total.label {
			j, wh = math.NaN(), math.NaN() // mixed models
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", figure("%.3f", j), figure("%.4f", wh))
	}
	tw.Flush()
	fmt.Fprintln(out, "\n(idle = energy and wear no request used, deadlabour_idle: GPUs 6-7 served nothing, the rest between requests;")
	fmt.Fprintln(out, " loaded = dead labour plus the idle of the intervals each request ran in; with the idle no request")
	fmt.Fprintln(out, " absorbed (overcapacity, deadlabour_idle share=unabsorbed) it adds up to the meters, as the active figures do with all idle;")
	fmt.Fprintln(out, " J/out tok = GPU energy over output tokens; - = not written by this daemon, or no total.)")
	if g := idle.v[colGPU]; !math.IsNaN(g) {
		fmt.Fprintf(out, "Idle GPU energy: %.3f Wh, %.0f %% of all GPU energy.\n", g/3600, 100*g/total.v[colGPU])
	}
	printCited(out, rows, ups)
	return nil
}

// idleRow sums deadlabour_idle: every numeric field over all its devices,
// and the GPUs' energy alone. A column whose idle field is absent is NaN.
func idleRow(ctx context.Context, influx string) (row, error) {
	idle := row{label: "(idle)", v: make([]float64, len(columns))}
	sums := map[string]float64{}
	for _, q := range []struct{ prefix, query string }{
		{"", `SELECT sum(*) FROM deadlabour_idle`},
		{"gpu:", `SELECT sum(energy_j) AS sum_energy_j FROM deadlabour_idle WHERE device != 'host'`},
	} {
		series, err := influxQuery(ctx, influx, q.query)
		if err != nil {
			return row{}, err
		}
		for _, s := range series {
			for i, name := range s.Columns {
				if f, ok := s.Values[0][i].(float64); ok {
					sums[q.prefix+strings.TrimPrefix(name, "sum_")] = f
				}
			}
		}
	}
	for i, c := range columns {
		key := c.idle
		if c.gpuOnly {
			key = "gpu:" + key
		}
		idle.v[i] = math.NaN()
		if f, ok := sums[key]; ok && c.idle != "" {
			idle.v[i] = f
		}
	}
	return idle, nil
}

// printCited prints each model's J per output token and GPU Wh per request
// beside the published range it is held to (physics.go), and the sources.
func printCited(out io.Writer, rows []row, ups []*upstream) {
	fmt.Fprintln(out, "\nAgainst published figures (the model's GPUs, idle excluded):")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tGPUs\tbatch\tJ/out tok\tcited\tEcoLogits\tGPU Wh/req\tcited\tinside\tsource\t")
	var sources []string
	for _, u := range ups {
		var r *row
		for i := range rows {
			if rows[i].label == u.model {
				r = &rows[i]
			}
		}
		if r == nil {
			continue
		}
		c := u.cited
		j := r.v[colGPU] / r.v[colOutput]
		wh := r.v[colGPU] / 3600 / r.v[colRequests]
		inside := j >= c.lo && j <= c.hi
		whCited := "-"
		if c.whHi > 0 {
			whCited = fmt.Sprintf("%.3f-%.2f", c.whLo, c.whHi)
			inside = inside && wh >= c.whLo && wh <= c.whHi
		}
		ref := slices.Index(sources, c.source)
		if ref < 0 {
			ref = len(sources)
			sources = append(sources, c.source)
		}
		fmt.Fprintf(tw, "%s\t%dxH100\t%d\t%.3f\t%.2f-%.2f\t%.3f\t%.4f\t%s\t%s\t[%d]\t\n", u.model, len(u.gpus), u.batch,
			j, c.lo, c.hi, ecologitsJPerToken(u.paramsB, u.batch, len(u.gpus)), wh, whCited, yesNo(inside), ref+1)
	}
	tw.Flush()
	for i, s := range sources {
		fmt.Fprintf(out, "[%d] %s\n", i+1, s)
	}
	fmt.Fprintf(out, "GPU Wh/req: within 3x of Google 2025's median Gemini Apps prompt, %.2f Wh under the narrow boundary (%.2f Wh in all).\n",
		googleMedianAcceleratorWh, googleMedianWh)
	fmt.Fprintln(out, "EcoLogits: alpha*exp(beta*batch)*params + gamma Wh per GPU per output token, for the same GPUs and batch.")
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func figure(format string, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

type influxSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

func influxQuery(ctx context.Context, base, q string) ([]influxSeries, error) {
	u := base + "/query?db=deadlabour&q=" + url.QueryEscape(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query InfluxDB: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []influxSeries `json:"series"`
			Error  string         `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query InfluxDB: %w", err)
	}
	if body.Error != "" {
		return nil, fmt.Errorf("query InfluxDB: %s", body.Error)
	}
	if len(body.Results) > 0 && body.Results[0].Error != "" {
		return nil, fmt.Errorf("query InfluxDB: %s", body.Results[0].Error)
	}
	if len(body.Results) == 0 {
		return nil, nil
	}
	return body.Results[0].Series, nil
}
