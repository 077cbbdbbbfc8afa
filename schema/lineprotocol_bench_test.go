package schema

import (
	"slices"
	"testing"

	"github.com/deadlabour/deadlabour/internal/schematest"
	"github.com/influxdata/line-protocol/v2/lineprotocol"
)

// BenchmarkLineprotocolEncoder encodes BenchmarkAppendLine's point with
// github.com/influxdata/line-protocol/v2's Encoder alone, one encoder reused
// and none of AppendLine's checks: the least an AppendLine built on it would
// cost. point.go says why AppendLine does not use it.
func BenchmarkLineprotocolEncoder(b *testing.B) {
	p, err := RequestPoint(schematest.Record())
	if err != nil {
		b.Fatal(err)
	}
	tags := slices.SortedFunc(slices.Values(p.Tags), compareTags)
	var e lineprotocol.Encoder
	b.ReportAllocs()
	for b.Loop() {
		e.Reset()
		e.StartLine(p.Measurement)
		for _, t := range tags {
			if t.Value != "" {
				e.AddTag(t.Key, t.Value)
			}
		}
		for _, f := range p.Fields {
			v, ok := lineprotocol.NewValue(f.Value)
			if !ok {
				b.Fatalf("field %q: %v", f.Key, f.Value)
			}
			e.AddField(f.Key, v)
		}
		e.EndLine(p.Time)
		if err := e.Err(); err != nil {
			b.Fatal(err)
		}
	}
}
