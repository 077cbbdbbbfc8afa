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

// lpPoint is what a line holds that a report reads.
type lpPoint struct {
	measurement string
	tags        map[string]string
	sums        map[string]float64
	strs        map[string]string // string fields
	requests    float64           // 1 for a record with a request_id
	simulated   bool
	time        time.Time
}

// measurements the report reads, and the numeric fields it keeps of each.
var lpNumbers = map[string]map[string]bool{
	schema.MeasurementRequest: fieldSet(),
	schema.MeasurementIdle:    setOf(idleFields()),
	schema.MeasurementGPU:     {"mem_total_bytes": true},
}

func setOf(fields []string) map[string]bool {
	m := map[string]bool{}
	for _, f := range fields {
		m[f] = true
	}
	return m
}

func (s *lineProtocolSource) Read(ctx context.Context, q Query) (*Data, error) {
	rc, err := s.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dec := lineprotocol.NewDecoder(rc)
	d := &Data{}
	set := rowSet{}
	seen := map[uint64]bool{}
	dim, _ := dimensionOf(q.By)
	type bucketKey struct {
		start time.Time
		model string
		idle  bool
	}
	buckets := map[bucketKey]map[string]float64{}
	for n := 0; dec.Next(); n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p, ok, err := s.decode(dec, seen)
		if err != nil {
			return nil, err
		}
		if !ok || p.time.Before(q.From) || !p.time.Before(q.To) {
			continue
		}
		if p.measurement == schema.MeasurementGPU {
			d.addGPU(p.tags["host"], p.tags["gpu_name"], uint64(p.sums["mem_total_bytes"]))
			continue
		}
		if (p.simulated && !q.Simulated) || (q.Currency != "" && p.tags["currency"] != q.Currency) {
			continue
		}
		rec := Row{Requests: p.requests, Sums: p.sums}
		if q.Bucket > 0 {
			b := bucketKey{bucketStart(p.time, q.Bucket), p.tags["model"], p.measurement == schema.MeasurementIdle}
			if buckets[b] == nil {
				buckets[b] = map[string]float64{}
			}
			addSeries(buckets[b], rec, !b.idle)
		}
		if p.measurement == schema.MeasurementIdle {
			d.Idle = append(d.Idle, IdleRow{Host: p.tags["host"], Share: p.tags["share"], Currency: p.tags["currency"], Sums: p.sums})
			continue
		}
		d.Methods = addDistinct(d.Methods, p.strs["method_version"])
		d.Factors = addDistinct(d.Factors, p.strs["factors"])
		keys, share := dim.recordKeys(p.tags, p.strs)
		for _, k := range keys {
			set.add(k, p.tags["currency"], p.tags["host"], rec, share)
		}
	}
	if err := dec.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	d.Rows = set.sorted()
	for b, sums := range buckets {
		d.Series = append(d.Series, Bucket{Start: b.start, Model: b.model, Idle: b.idle, Sums: sums})
	}
	sortSeries(d.Series)
	return d, nil
}

// addSeries adds a record's (or idle point's) series fields to a bucket.
func addSeries(sums map[string]float64, rec Row, requests bool) {
	if requests {
		sums["requests"] += rec.Requests
	}
	for _, f := range seriesFields() {
		if v, ok := rec.Sums[f]; ok {
			sums[f] += v
		}
	}
}

// decode reads the line dec is at; ok is false for a measurement the
// report does not read and for a line that repeats the series and
// timestamp of an earlier one (seen).
func (s *lineProtocolSource) decode(dec *lineprotocol.Decoder, seen map[uint64]bool) (lpPoint, bool, error) {
	p := lpPoint{tags: map[string]string{}, sums: map[string]float64{}, strs: map[string]string{}}
	m, err := dec.Measurement()
	if err != nil {
		return p, false, fmt.Errorf("%s: %w", s.name, err)
	}
	p.measurement = string(m)
	numbers := lpNumbers[p.measurement]
	if numbers == nil {
		return p, false, nil
	}
	series := fnv.New64a()
	series.Write(m)
	series.Write([]byte{0})
	for {
		k, v, err := dec.NextTag()
		if err != nil {
			return p, false, fmt.Errorf("%s: %w", s.name, err)
		}
		if k == nil {
			break
		}
		p.tags[string(k)] = string(v)
		series.Write(k)
		series.Write([]byte{0})
		series.Write(v)
		series.Write([]byte{0})
	}
	for {
		k, v, err := dec.NextField()
		if err != nil {
			return p, false, fmt.Errorf("%s: %w", s.name, err)
		}
		if k == nil {
			break
		}
		switch key := string(k); {
		case key == "request_id":
			p.requests = 1
		case key == "simulated" && v.Kind() == lineprotocol.Bool:
			p.simulated = v.BoolV()
		case numbers[key]:
			switch v.Kind() {
			case lineprotocol.Float:
				p.sums[key] = v.FloatV()
			case lineprotocol.Int:
				p.sums[key] = float64(v.IntV())
			case lineprotocol.Uint:
				p.sums[key] = float64(v.UintV())
			default:
				return p, false, fmt.Errorf("%s: field %s is a %v, want a number", s.name, key, v.Kind())
			}
		case v.Kind() == lineprotocol.String:
			p.strs[key] = v.StringV()
		}
	}
	t, err := dec.Time(lineprotocol.Nanosecond, time.Time{})
	if err != nil {
		return p, false, fmt.Errorf("%s: %w", s.name, err)
	}
	if t.IsZero() {
		return p, false, fmt.Errorf("%s: a %s line without a timestamp", s.name, p.measurement)
	}
	p.time = t
	binary.Write(series, binary.LittleEndian, t.UnixNano())
	id := series.Sum64()
	if seen[id] {
		return p, false, nil
	}
	seen[id] = true
	return p, true, nil
}
