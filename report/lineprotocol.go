package report

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/deadlabour/deadlabour/schema"
)

// lineProtocolSource totals the deadlabour_request lines of line protocol,
// as InfluxDB would: the spool's when no InfluxDB is configured, or a file's
// (--line-protocol). Other measurements are skipped. A line that repeats
// the series and timestamp of an earlier one (a record replayed after a
// crash) counts once, as InfluxDB keeps one point per series and time.
type lineProtocolSource struct {
	name string // for error messages
	open func() (io.ReadCloser, error)
}

// LineProtocolFile reads a file, or standard input for "-".
func LineProtocolFile(path string) Source {
	if path == "-" {
		return &lineProtocolSource{name: "standard input", open: func() (io.ReadCloser, error) { return io.NopCloser(os.Stdin), nil }}
	}
	return &lineProtocolSource{name: path, open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

// fieldSet is the summed fields, for lookups while decoding.
func fieldSet() map[string]bool {
	m := map[string]bool{}
	for _, f := range Fields() {
		m[f] = true
	}
	return m
}

func (s *lineProtocolSource) Sums(ctx context.Context, q Query) ([]Row, error) {
	rc, err := s.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dec := lineprotocol.NewDecoder(rc)
	set := rowSet{}
	seen := map[uint64]bool{}
	tag, _ := Dimension(q.By)
	fields := fieldSet()
	for n := 0; dec.Next(); n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m, err := dec.Measurement()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if string(m) != schema.MeasurementRequest {
			continue
		}
		series := fnv.New64a()
		tags := map[string]string{}
		for {
			k, v, err := dec.NextTag()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			if k == nil {
				break
			}
			tags[string(k)] = string(v)
			series.Write(k)
			series.Write([]byte{0})
			series.Write(v)
			series.Write([]byte{0})
		}
		rec := Row{Sums: map[string]float64{}}
		var simulated bool
		var gpus string
		for {
			k, v, err := dec.NextField()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			if k == nil {
				break
			}
			switch key := string(k); {
			case key == "request_id":
				rec.Requests = 1
			case key == "simulated" && v.Kind() == lineprotocol.Bool:
				simulated = v.BoolV()
			case key == "gpus" && v.Kind() == lineprotocol.String:
				gpus = v.StringV()
			case fields[key]:
				switch v.Kind() {
				case lineprotocol.Float:
					rec.Sums[key] = v.FloatV()
				case lineprotocol.Int:
					rec.Sums[key] = float64(v.IntV())
				case lineprotocol.Uint:
					rec.Sums[key] = float64(v.UintV())
				default:
					return nil, fmt.Errorf("%s: field %s is a %v, want a number", s.name, key, v.Kind())
				}
			}
		}
		t, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if t.IsZero() {
			return nil, fmt.Errorf("%s: a %s line without a timestamp", s.name, schema.MeasurementRequest)
		}
		if t.Before(q.From) || !t.Before(q.To) || (simulated && !q.Simulated) || (q.Currency != "" && tags["currency"] != q.Currency) {
			continue
		}
		binary.Write(series, binary.LittleEndian, t.UnixNano())
		if id := series.Sum64(); seen[id] {
			continue
		} else {
			seen[id] = true
		}
		if q.By != "gpu" {
			set.add(tags[tag], tags["currency"], rec, 1)
			continue
		}
		keys, share := gpuShares(tags["host"], gpus)
		for _, k := range keys {
			set.add(k, tags["currency"], rec, share)
		}
	}
	if err := dec.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return set.sorted(), nil
}
