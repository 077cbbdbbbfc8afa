package requests

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// beginRecorder keeps the spans of Begin.
type beginRecorder struct {
	mu     sync.Mutex
	begins []estimator.Span
}

func (r *beginRecorder) Begin(s estimator.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begins = append(r.begins, s)
}

func (r *beginRecorder) End(estimator.Span) {}

// The proxy's Begin carries what is known when a request starts, its
// upstream and tenant, so that a request still open at shutdown is
// recorded with them (the ledger's abandoned record).
func TestBeginCarriesUpstreamAndTenant(t *testing.T) {
	up := httptest.NewServer(fakeupstream.New(fakeupstream.Options{}))
	defer up.Close()
	rec := &beginRecorder{}
	p, err := New(Options{Name: "up-a", Target: up.URL, Devices: []string{"0"}, TenantSecret: testSecret}, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("X-Request-Id", "r-1")
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := tenants{secret: testSecret}.of(req.Header)
	if len(rec.begins) != 1 {
		t.Fatalf("%d begins, want 1", len(rec.begins))
	}
	if b := rec.begins[0]; b.ID != "r-1" || b.Upstream != "up-a" || b.Tenant != want || want == "" || len(b.Devices) != 1 || b.Start.IsZero() {
		t.Errorf("begin %+v, want id r-1, upstream up-a, tenant %q, devices [0], a start", b, want)
	}
}

// TenantHeaderRaw (config tenant_header_raw) reaches the proxy's tenants:
// a team name in the header is kept as it is.
func TestTenantHeaderRawOption(t *testing.T) {
	up := httptest.NewServer(fakeupstream.New(fakeupstream.Options{}))
	defer up.Close()
	for _, raw := range []bool{false, true} {
		rec := &beginRecorder{}
		p, err := New(Options{Name: "u", Target: up.URL, Devices: []string{"0"}, TenantSecret: testSecret,
			TenantHeader: "X-Team", TenantHeaderRaw: raw}, rec)
		if err != nil {
			t.Fatal(err)
		}
		front := httptest.NewServer(p)
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Team", "team-a")
		if res, err := front.Client().Do(req); err != nil {
			t.Fatal(err)
		} else {
			res.Body.Close()
		}
		front.Close()
		p.CloseIdleConnections()
		want := tenants{secret: testSecret}.hash("team-a")
		if raw {
			want = "team-a"
		}
		rec.mu.Lock()
		if len(rec.begins) != 1 || rec.begins[0].Tenant != want {
			t.Errorf("raw %v: begins %+v, want tenant %q", raw, rec.begins, want)
		}
		rec.mu.Unlock()
	}
}
