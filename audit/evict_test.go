package audit

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// Eviction keeps the newest maxRecords records whatever their ids, and
// costs the same per record whether a client repeats one request id or
// never does: records moved by compaction never outnumber records added,
// and no array grows beyond three times the records it keeps (twice, and append's growth).
func TestAuditEvictionAmortised(t *testing.T) {
	const max, adds = 1000, 20000
	for _, ids := range []int{1, 3, adds} {
		t.Run(fmt.Sprintf("%d ids", ids), func(t *testing.T) {
			store := New(estimator.Params{}, nil, max, time.Hour, schema.RequestSchema{})
			rng := rand.New(rand.NewPCG(1, uint64(ids)))
			var all []estimator.Record
			for i := range adds {
				r := estimator.Record{Span: estimator.Span{ID: fmt.Sprintf("id-%d", rng.IntN(ids))}, Time: t0.Add(time.Duration(i) * time.Millisecond)}
				if ids == adds {
					r.ID = fmt.Sprintf("id-%d", i)
				}
				store.AddRecord(r)
				all = append(all, r)
			}
			// The newest max records, by id, in the order they came.
			want := map[string][]time.Time{}
			for _, r := range all[len(all)-max:] {
				want[r.ID] = append(want[r.ID], r.Time)
			}
			if len(store.records) != len(want) || store.order.len() != max {
				t.Fatalf("%d ids and %d records kept, want %d and %d", len(store.records), store.order.len(), len(want), max)
			}
			moved := store.order.moved
			for id, times := range want {
				q := store.records[id]
				if q == nil || q.len() != len(times) {
					t.Fatalf("%s: %v kept, want %d records", id, q, len(times))
				}
				for i, r := range q.live() {
					if !r.Time.Equal(times[i]) {
						t.Fatalf("%s: record %d is of %v, want %v", id, i, r.Time, times[i])
					}
				}
				if c := cap(q.items); c > 3*(max+compactAfter) {
					t.Errorf("%s: array of %d records for %d kept", id, c, q.len())
				}
				moved += q.moved
			}
			if c := cap(store.order.items); c > 3*(max+compactAfter) {
				t.Errorf("order: array of %d ids for %d kept", c, store.order.len())
			}
			// Each compaction moves fewer items than were popped since the
			// last: at most one move per record evicted, twice over (the
			// record and its id in order). A copy of the id's records per
			// eviction would move about adds*max.
			if moved > 2*(adds-max) {
				t.Errorf("%d items moved for %d records evicted", moved, adds-max)
			}
			if ids == 1 && store.records["id-0"].moved == 0 {
				t.Errorf("one id's records never compacted: the test does not reach compaction")
			}
		})
	}
}

// BenchmarkAuditAddRecord: adding a record to a full store (1,000, the
// default attribution.audit_records) when every record has the same
// request id, against when none repeats. The costs should be alike.
func BenchmarkAuditAddRecord(b *testing.B) {
	const max = 1000
	for _, c := range []struct {
		name string
		id   func(i int) string
	}{{"distinct-ids", func(i int) string { return "id-" + strconv.Itoa(i) }}, {"one-id", func(int) string { return "constant" }}} {
		b.Run(c.name, func(b *testing.B) {
			store := New(estimator.Params{}, nil, max, time.Hour, schema.RequestSchema{})
			r := estimator.Record{PerDevice: make([]estimator.DeviceShare, 2)}
			ids := make([]string, 4*max)
			for i := range ids {
				ids[i] = c.id(i)
			}
			for i := range 2 * max {
				r.ID = ids[i%len(ids)]
				store.AddRecord(r)
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				r.ID = ids[i%len(ids)]
				store.AddRecord(r)
				i++
			}
		})
	}
}
