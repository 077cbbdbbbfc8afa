package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// Eviction keeps the newest maxRecords records whatever their ids, and
// costs the same per record whether a client repeats one request id or
// never does: records moved by compaction never outnumber records added,
// and no array grows beyond three times the records it keeps (twice, and append's growth).
func TestAuditEvictionAmortised(t *testing.T) {
	const max, adds = 1000, 20000
	for _, ids := range []int{1, 3, adds} {
		t.Run(fmt.Sprintf("%d ids", ids), func(t *testing.T) {
			store := newAuditStore(estimator.Params{}, nil, max, time.Hour)
			rng := rand.New(rand.NewPCG(1, uint64(ids)))
			var all []estimator.Record
			for i := range adds {
				r := estimator.Record{Span: estimator.Span{ID: fmt.Sprintf("id-%d", rng.IntN(ids))}, Time: t0.Add(time.Duration(i) * time.Millisecond)}
				if ids == adds {
					r.ID = fmt.Sprintf("id-%d", i)
				}
				store.addRecord(r)
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

// One answer shows at most auditShowMax records of an id (fewer with
// ?limit=), the newest, and says how many the id has; deadlabourd audit
// numbers them among all.
func TestAuditShowCap(t *testing.T) {
	store, recs := auditFixture(t, "time", 1000, time.Hour)
	const n = auditShowMax + 50
	var times []string
	for i := range n {
		r := recs[i%len(recs)]
		r.ID = "constant"
		r.Time = r.Time.Add(time.Duration(i) * time.Microsecond) // told apart by time, as in InfluxDB
		store.addRecord(r)
		times = append(times, r.Time.UTC().Format(time.RFC3339Nano))
	}
	h := http.HandlerFunc(store.serveRequest)
	type several struct {
		SameID  int               `json:"same_id_records"`
		Shown   int               `json:"records_shown"`
		Note    string            `json:"note"`
		Record  map[string]any    `json:"record"`
		Records []explainResponse `json:"records"`
	}
	for _, c := range []struct {
		query string
		shown int
	}{{"?explain=1", auditShowMax}, {"", auditShowMax}, {"?explain=1&limit=3", 3}, {fmt.Sprintf("?limit=%d", auditShowMax), auditShowMax}, {"?limit=1", 1}} {
		code, body := httpGet(t, h, "/v1/requests/constant"+c.query)
		var got several
		if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil {
			t.Fatalf("%s: %d %v %.200s", c.query, code, err, body)
		}
		if got.SameID != n || got.Shown != c.shown || len(got.Records) != c.shown || got.Record != nil ||
			!strings.Contains(got.Note, fmt.Sprintf("the newest %d of the %d", c.shown, n)) {
			t.Errorf("%s: same_id_records %d, records_shown %d, %d records, note %q; want %d, %d", c.query, got.SameID, got.Shown,
				len(got.Records), got.Note, n, c.shown)
			continue
		}
		for i, a := range got.Records {
			if want := times[n-c.shown+i]; a.Record["time"] != want {
				t.Errorf("%s: record %d of %v, want %v (the newest, oldest first)", c.query, i, a.Record["time"], want)
			}
			if strings.Contains(c.query, "explain") != (len(a.Explain.Devices) > 0) {
				t.Errorf("%s: record %d explained: %v", c.query, i, len(a.Explain.Devices) > 0)
			}
		}
	}
	for _, bad := range []string{"0", "-1", "101", "abc", "1.5"} {
		if code, body := httpGet(t, h, "/v1/requests/constant?limit="+bad); code != http.StatusBadRequest ||
			!bytes.Contains(body, []byte(fmt.Sprintf(`limit=\"%s\": want a whole number of records from 1 to %d`, bad, auditShowMax))) {
			t.Errorf("limit=%s: %d %s", bad, code, body)
		}
	}

	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		mux.HandleFunc(requestPattern, store.serveRequest)
		return mux
	}())
	defer srv.Close()
	admin := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		args  []string
		shown int
	}{{nil, auditShowMax}, {[]string{"--limit", "2"}, 2}} {
		var out, errb bytes.Buffer
		args := append(append([]string{"audit", "--admin", admin}, c.args...), "constant")
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		for _, want := range []string{fmt.Sprintf("%d records share request id constant", n), fmt.Sprintf("Showing the newest %d", c.shown),
			fmt.Sprintf("record %d of %d, time %s", n-c.shown+1, n, times[n-c.shown]), fmt.Sprintf("record %d of %d, time %s", n, n, times[n-1])} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: output lacks %q", args, want)
			}
		}
		if got := strings.Count(out.String(), "=== record "); got != c.shown {
			t.Errorf("%v: %d records printed, want %d", args, got, c.shown)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"audit", "--admin", admin, "--limit", "101", "constant"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--limit 101: want 1 to 100") {
		t.Errorf("--limit 101: exit %d, %s", code, errb.String())
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
			store := newAuditStore(estimator.Params{}, nil, max, time.Hour)
			r := estimator.Record{PerDevice: make([]estimator.DeviceShare, 2)}
			ids := make([]string, 4*max)
			for i := range ids {
				ids[i] = c.id(i)
			}
			for i := range 2 * max {
				r.ID = ids[i%len(ids)]
				store.addRecord(r)
			}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				r.ID = ids[i%len(ids)]
				store.addRecord(r)
				i++
			}
		})
	}
}
