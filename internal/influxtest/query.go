package influxtest

// Queries: writing line protocol and reading series back.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxql"
)

// Write stores line protocol (nanosecond timestamps) through the v1 API,
// for preparing data a test reads back.
func (s *Server) Write(tb testing.TB, lines string) {
	tb.Helper()
	v := url.Values{"db": {Database}, "precision": {"ns"}}
	if user, pw := s.credentials(); user != "" {
		v.Set("u", user)
		v.Set("p", pw)
	}
	u := s.URL() + "/write?" + v.Encode()
	resp, err := s.client.Post(u, "text/plain", strings.NewReader(lines))
	if err != nil {
		tb.Fatalf("influxtest: write: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(resp.Body)
		tb.Fatalf("influxtest: write: %s: %s", resp.Status, body)
	}
}

// Series is one series of an InfluxQL result. Values keep numbers as
// json.Number, so floats read back exactly; time is integer nanoseconds.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Rows returns one map per row from column to value, leaving out nulls (a
// field a point does not have). The series' GROUP BY tags are in every row.
func (s Series) Rows() []Row {
	rows := make([]Row, 0, len(s.Values))
	for _, vals := range s.Values {
		r := make(Row, len(vals)+len(s.Tags))
		for k, v := range s.Tags {
			r[k] = v
		}
		for i, v := range vals {
			if v != nil && i < len(s.Columns) {
				r[s.Columns[i]] = v
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// Query runs InfluxQL against DB() and returns its series. Statement errors
// fail the test.
func (s *Server) Query(tb testing.TB, influxql string) []Series {
	tb.Helper()
	series, err := s.query(influxql)
	if err != nil {
		tb.Fatalf("influxtest: %v", err)
	}
	return series
}

// QueryErr runs InfluxQL against DB() and returns its series, or its
// error (a statement's included) instead of failing the test.
func (s *Server) QueryErr(influxql string) ([]Series, error) { return s.query(influxql) }

// Exec runs a statement that returns no rows (CREATE, DROP, ...).
func (s *Server) Exec(tb testing.TB, influxql string) {
	tb.Helper()
	s.Query(tb, influxql)
}

// Rows runs a query and returns the rows of all its series.
func (s *Server) Rows(tb testing.TB, influxql string) []Row {
	tb.Helper()
	var rows []Row
	for _, sr := range s.Query(tb, influxql) {
		rows = append(rows, sr.Rows()...)
	}
	return rows
}

// Count is the number of points of measurement that match where (an
// InfluxQL condition; empty for all).
func (s *Server) Count(tb testing.TB, measurement, where string) int {
	tb.Helper()
	return len(s.Rows(tb, selectAll(measurement, where)))
}

// WaitCount polls Count until it equals want, failing the test after
// timeout or as soon as there are more.
func (s *Server) WaitCount(tb testing.TB, measurement, where string, want int, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Count(tb, measurement, where)
		switch {
		case got == want:
			return
		case got > want:
			tb.Fatalf("influxtest: %d points of %s, want %d", got, measurement, want)
		case time.Now().After(deadline):
			tb.Fatalf("influxtest: %d points of %s after %v, want %d", got, measurement, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func selectAll(measurement, where string) string {
	q := "SELECT * FROM " + QuoteIdent(measurement)
	if where != "" {
		q += " WHERE " + where
	}
	return q
}

// QuoteIdent quotes an InfluxQL identifier (measurement, tag or field key).
func QuoteIdent(s string) string { return influxql.QuoteIdent(s) }

// QuoteString quotes an InfluxQL string literal (a tag value in WHERE).
func QuoteString(s string) string { return influxql.QuoteString(s) }

func (s *Server) query(influxql string) ([]Series, error) {
	user, password := s.credentials()
	return s.doQuery(user, password, influxql)
}

func (s *Server) doQuery(user, password, influxql string) ([]Series, error) {
	form := url.Values{"db": {Database}, "q": {influxql}, "epoch": {"ns"}}
	endpoint := s.URL() + "/query"
	if user != "" {
		// InfluxDB reads credentials from the URL, not the form.
		endpoint += "?" + url.Values{"u": {user}, "p": {password}}.Encode()
	}
	resp, err := s.client.PostForm(endpoint, form)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", influxql, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", influxql, err)
	}
	var out struct {
		Error   string `json:"error"`
		Results []struct {
			Error  string   `json:"error"`
			Series []Series `json:"series"`
		} `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("query %q: %s: %w: %.200s", influxql, resp.Status, err, body)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("query %q: %s: %s", influxql, resp.Status, out.Error)
	}
	var series []Series
	for _, r := range out.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("query %q: %s", influxql, r.Error)
		}
		series = append(series, r.Series...)
	}
	return series, nil
}
