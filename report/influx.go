package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxql"
	"github.com/deadlabour/deadlabour/internal/redact"
	"github.com/deadlabour/deadlabour/schema"
)

// influxSource totals records in InfluxDB with InfluxQL over the v1 /query
// API, which InfluxDB 1.8, 2.x (through the DBRP mapping of the bucket) and
// 3.x all answer; the sums are computed by the server.
//
// No client library: influxdb-client-go speaks only Flux, and the v1 client
// has no token authentication. This is one POST and a JSON decode.
type influxSource struct {
	url    string // base URL
	db, rp string // from the bucket "db/rp"; rp may be empty
	token  string // Authorization: Token ...; 1.x takes user:password
	client *http.Client
}

// NewInfluxSource totals the records of bucket ("db" or "db/rp") at the
// InfluxDB at rawURL.
func NewInfluxSource(rawURL, bucket, token string, timeout time.Duration) (Source, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("influx.url %q: want an http:// or https:// URL", redact.URL(rawURL))
	}
	db, rp, _ := strings.Cut(bucket, "/")
	if db == "" {
		return nil, fmt.Errorf("influx.bucket %q: want a bucket or database/retention-policy", bucket)
	}
	return &influxSource{url: strings.TrimSuffix(rawURL, "/"), db: db, rp: rp, token: token,
		client: &http.Client{Timeout: timeout}}, nil
}

// influxSeries is one series of an InfluxQL result.
type influxSeries struct {
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

type influxResult struct {
	StatementID int            `json:"statement_id"`
	Series      []influxSeries `json:"series"`
	Error       string         `json:"error"`
}

// query runs one or more InfluxQL statements (separated by ';') and returns
// one result per statement, in order.
func (s *influxSource) query(ctx context.Context, q string) ([]influxResult, error) {
	form := url.Values{"db": {s.db}, "q": {q}, "epoch": {"ns"}}
	if s.rp != "" {
		form.Set("rp", s.rp)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Token "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("InfluxDB query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("InfluxDB query: %s: %w", resp.Status, err)
	}
	var out struct {
		Results []influxResult `json:"results"`
		Error   string         `json:"error"`
		Message string         `json:"message"` // 2.x/3.x errors
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("InfluxDB query: %s: %.200s", resp.Status, body)
	}
	if msg := out.Error + out.Message; msg != "" || resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("InfluxDB query (database %q): %s: %s", s.db, resp.Status, msg)
	}
	for _, r := range out.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("InfluxDB query (database %q): %s", s.db, r.Error)
		}
	}
	return out.Results, nil
}

// sumsSelect is the SELECT of a report: count(request_id) and the sum of
// every column, each aliased to its field name.
func sumsSelect() string { return sumsOf(schema.MeasurementRequest, "request_id", Fields()) }

// sumsOf selects the sum of each field of measurement, aliased to its
// name, and count(counted) AS requests unless counted is "".
func sumsOf(measurement, counted string, fields []string) string {
	var sel []string
	if counted != "" {
		sel = append(sel, fmt.Sprintf(`count(%s) AS "requests"`, influxql.QuoteIdent(counted)))
	}
	for _, f := range fields {
		f := influxql.QuoteIdent(f)
		sel = append(sel, fmt.Sprintf(`sum(%s) AS %s`, f, f))
	}
	return fmt.Sprintf(`SELECT %s FROM %s`, strings.Join(sel, ", "), influxql.QuoteIdent(measurement))
}

// where is the period and, unless asked for, the exclusion of simulated
// records.
func (q Query) where() string {
	w := fmt.Sprintf(`time >= %d AND time < %d`, q.From.UnixNano(), q.To.UnixNano())
	if !q.Simulated {
		w += ` AND "simulated" = false`
	}
	if q.Currency != "" {
		w += ` AND "currency" = ` + influxql.QuoteString(q.Currency)
	}
	return w
}

func (s *influxSource) Read(ctx context.Context, q Query) (*Data, error) {
	d := &Data{}
	var err error
	if dim, _ := dimensionOf(q.By); dim.keys != nil {
		d.Rows, err = s.fieldSums(ctx, q, dim)
	} else {
		d.Rows, err = s.sums(ctx, q)
	}
	if err != nil {
		return nil, err
	}
	stmts := []string{
		fmt.Sprintf(`%s WHERE %s GROUP BY "host", "share", "currency"`, sumsOf(schema.MeasurementIdle, "", idleFields()), q.where()),
		fmt.Sprintf(`SELECT max("mem_total_bytes") AS "mem", count("samples") AS "n" FROM %s WHERE time >= %d AND time < %d GROUP BY "host", "gpu_name"`,
			influxql.QuoteIdent(schema.MeasurementGPU), q.From.UnixNano(), q.To.UnixNano()),
		fmt.Sprintf(`SELECT DISTINCT("method_version") FROM %s WHERE %s`, influxql.QuoteIdent(schema.MeasurementRequest), q.where()),
		fmt.Sprintf(`SELECT DISTINCT("factors") FROM %s WHERE %s`, influxql.QuoteIdent(schema.MeasurementRequest), q.where()),
	}
	if q.Bucket > 0 {
		by := fmt.Sprintf(`GROUP BY time(%ds), "model" fill(none)`, int64(q.Bucket/time.Second))
		stmts = append(stmts,
			fmt.Sprintf(`%s WHERE %s %s`, sumsOf(schema.MeasurementRequest, "request_id", seriesFields()), q.where(), by),
			fmt.Sprintf(`%s WHERE %s %s`, sumsOf(schema.MeasurementIdle, "", seriesFields()), q.where(), by))
	}
	res, err := s.queryAll(ctx, stmts)
	if err != nil {
		return nil, err
	}
	for _, sr := range res[0].Series {
		row, err := seriesRow(sr)
		if err != nil {
			return nil, err
		}
		d.Idle = append(d.Idle, IdleRow{Host: sr.Tags["host"], Share: sr.Tags["share"], Currency: sr.Tags["currency"], Sums: row.Sums})
	}
	for _, sr := range res[1].Series {
		row, err := seriesRow(sr)
		if err != nil {
			return nil, err
		}
		d.addGPU(sr.Tags["host"], sr.Tags["gpu_name"], uint64(row.Sums["mem"]))
	}
	for i, set := range []*[]string{&d.Methods, &d.Factors} {
		for _, v := range distinctStrings(res[2+i]) {
			*set = addDistinct(*set, v)
		}
	}
	if q.Bucket > 0 {
		for i, idle := range []bool{false, true} {
			for _, sr := range res[4+i].Series {
				rows, err := seriesRows(sr)
				if err != nil {
					return nil, err
				}
				for _, r := range rows {
					if !idle {
						r.Sums["requests"] = r.Requests
					}
					d.Series = append(d.Series, Bucket{Start: r.start, Model: sr.Tags["model"], Idle: idle, Sums: r.Sums})
				}
			}
		}
	}
	return d, nil
}

// sums groups by the tag of q.By, and by node (for the embodied range).
func (s *influxSource) sums(ctx context.Context, q Query) ([]Row, error) {
	tag, _ := Dimension(q.By)
	group := influxql.QuoteIdent(tag)
	if tag != "host" {
		group += `, "host"`
	}
	res, err := s.query(ctx, fmt.Sprintf(`%s WHERE %s GROUP BY %s, "currency"`, sumsSelect(), q.where(), group))
	if err != nil {
		return nil, err
	}
	return collect(res, func(_ int, sr influxSeries) ([]string, float64) { return []string{sr.Tags[tag]}, 1 })
}

// collect adds up the aggregate series of results: each series counts
// share times under each of the keys keyOf gives it (i is the statement),
// in its currency.
func collect(res []influxResult, keyOf func(i int, sr influxSeries) ([]string, float64)) ([]Row, error) {
	set := rowSet{}
	for i, r := range res {
		for _, sr := range r.Series {
			row, err := seriesRow(sr)
			if err != nil {
				return nil, err
			}
			keys, share := keyOf(i, sr)
			for _, k := range keys {
				set.add(k, sr.Tags["currency"], sr.Tags["host"], row, share)
			}
		}
	}
	return set.sorted(), nil
}

// fieldSums groups by a field dimension, which InfluxQL cannot GROUP BY.
// It asks for the distinct values of the dimension's fields first, each
// field's within each value of the one before (a pod's name within its
// namespace), then, in one request, the sums of each combination and the
// total, per node and currency. No InfluxQL condition matches a record
// without a field, so the records without one are the total less the
// combinations.
func (s *influxSource) fieldSums(ctx context.Context, q Query, dim dimension) ([]Row, error) {
	from := fmt.Sprintf(`FROM %s WHERE %s`, influxql.QuoteIdent(schema.MeasurementRequest), q.where())
	combos := [][]string{nil}
	for _, f := range dim.fields {
		stmts := make([]string, len(combos))
		for i, c := range combos {
			stmts[i] = fmt.Sprintf(`SELECT DISTINCT(%s) %s%s`, influxql.QuoteIdent(f), from, dim.match(c))
		}
		res, err := s.queryAll(ctx, stmts)
		if err != nil {
			return nil, err
		}
		var next [][]string
		for i, r := range res {
			for _, v := range distinctStrings(r) {
				next = append(next, append(slices.Clip(combos[i]), v))
			}
		}
		if combos = next; len(combos) == 0 {
			break
		}
	}
	stmts := []string{fmt.Sprintf(`%s WHERE %s GROUP BY "host", "currency"`, sumsSelect(), q.where())}
	for _, c := range combos {
		stmts = append(stmts, fmt.Sprintf(`%s WHERE %s%s GROUP BY "host", "currency"`, sumsSelect(), q.where(), dim.match(c)))
	}
	res, err := s.queryAll(ctx, stmts)
	if err != nil {
		return nil, err
	}
	set := rowSet{}
	total, named := map[[2]string]*Row{}, map[[2]string]*Row{} // by node and currency
	for i, r := range res {
		for _, sr := range r.Series {
			row, err := seriesRow(sr)
			if err != nil {
				return nil, err
			}
			host, cur := sr.Tags["host"], sr.Tags["currency"]
			k := [2]string{host, cur}
			if i == 0 {
				total[k] = &row
				continue
			}
			if named[k] == nil {
				named[k] = &Row{}
			}
			named[k].add(row, 1)
			keys, share := dim.keys(host, combos[i-1])
			for _, key := range keys {
				set.add(key, cur, host, row, share)
			}
		}
	}
	for k, t := range total {
		if rest, ok := t.less(named[k]); ok {
			keys, share := dim.keys(k[0], make([]string, len(dim.fields)))
			for _, key := range keys {
				set.add(key, k[1], k[0], rest, share)
			}
		}
	}
	return set.sorted(), nil
}

// match is the condition that the fields of d have the values vals (the
// first len(vals) of them), after an AND.
func (d dimension) match(vals []string) string {
	var b strings.Builder
	for i, v := range vals {
		fmt.Fprintf(&b, ` AND %s = %s`, influxql.QuoteIdent(d.fields[i]), influxql.QuoteString(v))
	}
	return b.String()
}

// distinctStrings are the string values of a SELECT DISTINCT result.
func distinctStrings(r influxResult) []string {
	var out []string
	for _, sr := range r.Series {
		for _, v := range sr.Values {
			if len(v) == 2 {
				if str, ok := v[1].(string); ok {
					out = append(out, str)
				}
			}
		}
	}
	return out
}

// queryAll runs statements in one request, one result each.
func (s *influxSource) queryAll(ctx context.Context, stmts []string) ([]influxResult, error) {
	res, err := s.query(ctx, strings.Join(stmts, "; "))
	if err != nil {
		return nil, err
	}
	if len(res) != len(stmts) {
		return nil, fmt.Errorf("InfluxDB query: %d results for %d statements", len(res), len(stmts))
	}
	return res, nil
}

// seriesRow reads the one row of an aggregate series; null columns (a field
// no record had) stay out of Sums.
func seriesRow(sr influxSeries) (Row, error) {
	if len(sr.Values) != 1 {
		return Row{}, fmt.Errorf("InfluxDB query: %d rows in an aggregate series, want 1", len(sr.Values))
	}
	rows, err := seriesRows(sr)
	if err != nil {
		return Row{}, err
	}
	return rows[0].Row, nil
}

// timedRow is a row of a series and its time.
type timedRow struct {
	Row
	start time.Time
}

// seriesRows reads every row of an aggregate series (one per time bucket
// under GROUP BY time()).
func seriesRows(sr influxSeries) ([]timedRow, error) {
	out := make([]timedRow, len(sr.Values))
	for r, vals := range sr.Values {
		row := Row{Sums: map[string]float64{}}
		for i, col := range sr.Columns {
			if i >= len(vals) || vals[i] == nil {
				continue
			}
			n, ok := vals[i].(json.Number)
			if !ok {
				return nil, fmt.Errorf("InfluxDB query: column %s is %T, want a number", col, vals[i])
			}
			if col == "time" {
				ns, err := strconv.ParseInt(string(n), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("InfluxDB query: time: %w", err)
				}
				out[r].start = time.Unix(0, ns).UTC()
				continue
			}
			v, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return nil, fmt.Errorf("InfluxDB query: column %s: %w", col, err)
			}
			switch col {
			case "requests":
				row.Requests = v
			default:
				row.Sums[col] = v
			}
		}
		out[r].Row = row
	}
	return out, nil
}
