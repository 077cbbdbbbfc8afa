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

// begunWith sends one completion with header h through a proxy made with
// opts (Target, Devices and TenantSecret filled in) and returns the spans
// its Begin got.
func begunWith(t *testing.T, opts Options, h http.Header) []estimator.Span {
	t.Helper()
	up := httptest.NewServer(fakeupstream.New(fakeupstream.Options{}))
	defer up.Close()
	opts.Target, opts.Devices, opts.TenantSecret = up.URL, []string{"0"}, testSecret
	rec := &beginRecorder{}
	p, err := New(opts, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseIdleConnections()
	front := httptest.NewServer(p)
	defer front.Close()
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"x"}`))
	req.Header = h.Clone()
	req.Header.Set("Content-Type", "application/json")
	res, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.begins
}

// The proxy's Begin carries what is known when a request starts, its
// upstream, model (its body is read before it begins) and tenant, so that a request still open at shutdown is
// recorded with them (the ledger's abandoned record).
func TestBeginCarriesUpstreamModelAndTenant(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer " + apiKey}, "X-Request-Id": {"r-1"}}
	begins := begunWith(t, Options{Name: "up-a"}, h)
	want := tenants{secret: testSecret}.of(h)
	if len(begins) != 1 {
		t.Fatalf("%d begins, want 1", len(begins))
	}
	if b := begins[0]; b.ID != "r-1" || b.Upstream != "up-a" || b.Model != "m" || b.Tenant != want || want == "" || len(b.Devices) != 1 || b.Start.IsZero() {
		t.Errorf("begin %+v, want id r-1, upstream up-a, model m, tenant %q, devices [0], a start", b, want)
	}
}

// TenantHeaderRaw (config tenant_header_raw) reaches the proxy's tenants:
// a team name in the header is kept as it is, and hashed without it.
func TestTenantHeaderRawOption(t *testing.T) {
	for _, raw := range []bool{false, true} {
		begins := begunWith(t, Options{Name: "u", TenantHeader: "X-Team", TenantHeaderRaw: raw}, http.Header{"X-Team": {"team-a"}})
		want := tenants{secret: testSecret}.hash("team-a")
		if raw {
			want = "team-a"
		}
		if len(begins) != 1 || begins[0].Tenant != want {
			t.Errorf("raw %v: begins %+v, want tenant %q", raw, begins, want)
		}
	}
}
