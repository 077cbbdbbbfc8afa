package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
func sumsSelect() string {
	var b strings.Builder
	b.WriteString(`SELECT count("request_id") AS "requests"`)
	for _, c := range columns() {
		f := influxql.QuoteIdent(c.field)
		fmt.Fprintf(&b, `, sum(%s) AS %s`, f, f)
	}
	fmt.Fprintf(&b, ` FROM %s`, influxql.QuoteIdent(schema.MeasurementRequest))
	return b.String()
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

func (s *influxSource) Sums(ctx context.Context, q Query) ([]Row, error) {
	if q.By == "gpu" {
		return s.gpuSums(ctx, q)
	}
	tag, _ := Dimension(q.By)
	res, err := s.query(ctx, fmt.Sprintf(`%s WHERE %s GROUP BY %s, "currency"`, sumsSelect(), q.where(), influxql.QuoteIdent(tag)))
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
				set.add(k, sr.Tags["currency"], row, share)
			}
		}
	}
	return set.sorted(), nil
}

// gpuSums groups by the gpus field, which InfluxQL cannot GROUP BY: it asks
// for the distinct GPU sets of each node first, then the sums of each set
// in one request, and splits them with gpuShares.
func (s *influxSource) gpuSums(ctx context.Context, q Query) ([]Row, error) {
	res, err := s.query(ctx, fmt.Sprintf(`SELECT DISTINCT("gpus") FROM %s WHERE %s GROUP BY "host"`,
		influxql.QuoteIdent(schema.MeasurementRequest), q.where()))
	if err != nil {
		return nil, err
	}
	sets := map[string]bool{}
	for _, r := range res {
		for _, sr := range r.Series {
			for _, v := range sr.Values {
				if len(v) == 2 {
					if g, ok := v[1].(string); ok {
						sets[g] = true
					}
				}
			}
		}
	}
	if len(sets) == 0 {
		return nil, nil
	}
	var stmts []string
	var order []string
	for g := range sets {
		order = append(order, g)
		stmts = append(stmts, fmt.Sprintf(`%s WHERE %s AND "gpus" = %s GROUP BY "host", "currency"`, sumsSelect(), q.where(), influxql.QuoteString(g)))
	}
	res, err = s.query(ctx, strings.Join(stmts, "; "))
	if err != nil {
		return nil, err
	}
	if len(res) != len(order) {
		return nil, fmt.Errorf("InfluxDB query: %d results for %d statements", len(res), len(order))
	}
	return collect(res, func(i int, sr influxSeries) ([]string, float64) { return gpuShares(sr.Tags["host"], order[i]) })
}

// seriesRow reads the one row of an aggregate series; null columns (a field
// no record had) stay out of Sums.
func seriesRow(sr influxSeries) (Row, error) {
	row := Row{Sums: map[string]float64{}}
	if len(sr.Values) != 1 {
		return row, fmt.Errorf("InfluxDB query: %d rows in an aggregate series, want 1", len(sr.Values))
	}
	for i, col := range sr.Columns {
		if col == "time" || i >= len(sr.Values[0]) || sr.Values[0][i] == nil {
			continue
		}
		n, ok := sr.Values[0][i].(json.Number)
		if !ok {
			return row, fmt.Errorf("InfluxDB query: column %s is %T, want a number", col, sr.Values[0][i])
		}
		v, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return row, fmt.Errorf("InfluxDB query: column %s: %w", col, err)
		}
		if col == "requests" {
			row.Requests = v
			continue
		}
		row.Sums[col] = v
	}
	return row, nil
}
