package audit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// What the tests of package audit_test (which run the command line) use
// of the store and the fixture.

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// AuditFixture runs a small ledger (one GPU and the host, time-of-use
// price, market carbon) and keeps its output in an audit store.
func AuditFixture(t *testing.T, weighting string, maxRecords int, window time.Duration) (*Store, []estimator.Record) {
	t.Helper()
	yaml := fmt.Sprintf(`node: audit-test
facility:
  carbon_market_g_per_kwh: 90
  price_schedule:
    - from: "10:00"
      to: "10:01"
      price_per_kwh: 0.3
attribution:
  weighting: %s
  settle_delay: 0s
  idle_window: 1m
models:
  - name: m
    training_cost: 1.0e6
    training_co2e_kg: 5.0e5
    lifetime_tokens: 1.0e12
    human_labour_hours: 1000
`, weighting)
	cfg, err := config.Parse("audit.yaml", []byte(yaml), -1)
	if err != nil {
		t.Fatal(err)
	}
	l, sources := testutil.H100Ledger(t, cfg)
	store := New(l.Params(), sources, maxRecords, window, schema.RequestSchema{})
	var recs []estimator.Record
	take := func(out estimator.Output) {
		for _, r := range out.Records {
			store.AddRecord(r)
		}
		store.AddSettled(out.Settled)
		recs = append(recs, out.Records...)
	}
	var spans []estimator.Span
	for i := 0; i < 12; i++ {
		start := 0.35 * float64(i)
		spans = append(spans, estimator.Span{ID: fmt.Sprintf("req-%02d", i), Model: "m", Start: at(start), FirstToken: at(start + 0.1),
			End: at(start + 0.4 + 0.3*float64(i%4)), Status: "200", Served: i != 5, PromptTokens: int64(100 * (i + 1)),
			CompletionTokens: int64(20 + i), Devices: []string{"0"}, UsageSource: estimator.UsageReported})
	}
	for k := 0; k < 80; k++ {
		prev, now := at(float64(k)/10), at(float64(k+1)/10)
		for _, s := range spans {
			if !s.Start.Before(prev) && s.Start.Before(now) {
				l.Begin(s)
			}
			if !s.End.Before(prev) && s.End.Before(now) {
				l.End(s)
			}
		}
		for _, dev := range []string{"0", estimator.HostDevice} {
			if err := l.AddInterval(estimator.Interval{Device: dev, Start: prev, End: now, Joules: 30 + float64(k%7),
				Method: estimator.MethodCounter}); err != nil {
				t.Fatal(err)
			}
		}
		take(l.Settle(now))
	}
	take(l.Close())
	return store, recs
}

// HTTPGet asks h, served as GET /v1/requests/{id}, for path.
func HTTPGet(t *testing.T, h http.Handler, path string) (int, []byte) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(admin.PatternRequest, h)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.Bytes()
}

// ExplainResponse is one record's answer.
type ExplainResponse struct {
	Record  map[string]any    `json:"record"`
	Explain admin.Explanation `json:"explain"`
	SameID  int               `json:"same_id_records"` // the one-record answer's
}

// Handler is the store's GET /v1/requests/{id}.
func (s *Store) Handler() http.Handler { return http.HandlerFunc(s.serveRequest) }

// Kept is how many records the store keeps.
func (s *Store) Kept() int { return s.order.len() }

// NewLike is a fresh store of s's parameters, holding s's settlements.
func NewLike(s *Store, maxRecords int, window time.Duration) *Store {
	s2 := New(s.params, s.sources, maxRecords, window, schema.RequestSchema{})
	s2.settled = s.settled
	return s2
}
