package influxtest

import (
	"encoding/json"
	"strconv"
	"time"
)

// Row is one result row: column name to value. Numbers are json.Number
// (exactly as InfluxDB printed them), strings string, booleans bool.
type Row map[string]any

// Time is the row's timestamp (queries ask for epoch nanoseconds).
func (r Row) Time() (time.Time, bool) {
	ns, ok := r.Int("time")
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// Float is a numeric column as float64; InfluxDB prints floats in the
// shortest form that reads back to the same bits.
func (r Row) Float(col string) (float64, bool) {
	n, ok := r[col].(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	return f, err == nil
}

// Int is an integer column.
func (r Row) Int(col string) (int64, bool) {
	n, ok := r[col].(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil
}

// String is a string column (a tag or a string field).
func (r Row) String(col string) (string, bool) {
	s, ok := r[col].(string)
	return s, ok
}

// Bool is a boolean column.
func (r Row) Bool(col string) (bool, bool) {
	b, ok := r[col].(bool)
	return b, ok
}
