package audit

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// GET /v1/requests/{id} answers the record as InfluxDB has it; with
// ?explain=1 the intervals, weights and parameters, and a recomputation
// that matches, in every weighting.
func TestRequestExplain(t *testing.T) {
	for _, mode := range []string{"time", "tokens", "marginal"} {
		t.Run(mode, func(t *testing.T) {
			store, recs := AuditFixture(t, mode, 100, time.Hour)
			h := http.HandlerFunc(store.serveRequest)
			if len(recs) != 12 {
				t.Fatalf("%d records, want 12", len(recs))
			}
			for _, r := range recs {
				code, body := HTTPGet(t, h, "/v1/requests/"+r.ID+"?explain=1")
				if code != http.StatusOK {
					t.Fatalf("%s: %d %s", r.ID, code, body)
				}
				var resp ExplainResponse
				if err := json.Unmarshal(body, &resp); err != nil {
					t.Fatal(err)
				}
				// The record's fields are the InfluxDB point's.
				p, _ := schema.RequestPoint(r)
				for _, f := range p.Fields {
					got := resp.Record[f.Key]
					want, _ := json.Marshal(f.Value)
					if g, _ := json.Marshal(got); !bytes.Equal(g, want) {
						t.Errorf("%s: %s = %s, the point has %s", r.ID, f.Key, g, want)
					}
				}
				if resp.SameID != 1 {
					t.Errorf("%s: same_id_records %d in a one-record answer, want 1", r.ID, resp.SameID)
				}
				if !resp.Explain.Matches || resp.Explain.Weighting != mode {
					t.Errorf("%s: recomputation matches %v (%v), weighting %q", r.ID, resp.Explain.Matches, resp.Explain.MaxRelDiff, resp.Explain.Weighting)
				}
				charged := 0.0
				for _, d := range resp.Explain.Devices {
					for _, c := range d.Intervals {
						if d.Device == "0" {
							charged += c.Charged
						}
						// prompt_token_weight auto, the default: 8 s of
						// history is too little to fit, so the fallback;
						// the host is never fitted.
						wantSrc := map[string]string{"tokens": "default"}[mode]
						if mode == "tokens" && d.Device == estimator.HostDevice {
							wantSrc = "host"
						}
						if c.PromptWeightSource != wantSrc ||
							(mode == "tokens") != (c.PromptWeight == config.DefaultPromptTokenWeight) {
							t.Errorf("%s: prompt token weight %v (%q), want %q", r.ID, c.PromptWeight, c.PromptWeightSource, wantSrc)
						}
					}
				}
				if r.Served && (len(resp.Explain.Devices) != 2 || !testutil.Near(charged, r.GPUEnergyJ)) {
					t.Errorf("%s: the intervals shown charge %v J on GPU 0, the record %v J", r.ID, charged, r.GPUEnergyJ)
				}
				// A second answer is byte-identical.
				if _, again := HTTPGet(t, h, "/v1/requests/"+r.ID+"?explain=1"); !bytes.Equal(body, again) {
					t.Errorf("%s: two answers differ", r.ID)
				}
			}
			code, body := HTTPGet(t, h, "/v1/requests/req-03")
			if code != http.StatusOK || bytes.Contains(body, []byte(`"explain"`)) {
				t.Errorf("without explain: %d %s", code, body)
			}
			_, body = HTTPGet(t, h, "/v1/requests/req-03?explain=1")
			var resp ExplainResponse
			json.Unmarshal(body, &resp)
			sources := map[string]string{}
			for _, ps := range resp.Explain.Parameters {
				sources[ps.Name] = ps.Source
			}
			if !strings.HasPrefix(sources["facility.carbon_market_g_per_kwh"], "config line 3") ||
				!strings.HasPrefix(sources["facility.pue"], "default") || !strings.Contains(sources["gpu 0"], `"H100 SXM" from the catalogue`) ||
				!strings.Contains(sources["facility.price_schedule[0]"], "config line 5") {
				t.Errorf("parameter sources %v", sources)
			}
			if code, body := HTTPGet(t, h, "/v1/requests/nope"); code != http.StatusNotFound || !bytes.Contains(body, []byte("most recent")) {
				t.Errorf("unknown id: %d %s", code, body)
			}
		})
	}
}

// The store keeps the newest records, and settlements of the window only;
// a record whose intervals are gone says so instead of matching.
func TestAuditStoreBounded(t *testing.T) {
	store, recs := AuditFixture(t, "time", 5, 2*time.Second)
	if len(store.records) != 5 || store.order.len() != 5 {
		t.Fatalf("%d records kept, want 5", len(store.records))
	}
	newest := recs[len(recs)-1]
	if kept, n := store.lookup(newest.ID, admin.RequestShowMax); len(kept) != 1 || n != 1 {
		t.Errorf("newest record %s not kept", newest.ID)
	}
	for dev, lg := range store.settled {
		live := lg.entries.live()
		if span := time.Duration(live[len(live)-1].end - live[0].end); span > 2*time.Second {
			t.Errorf("device %s keeps %v of settlements, want <= 2s", dev, span)
		}
	}
	var first estimator.Record
	for _, id := range store.order.live() {
		if r := store.records[id].front(); r.Served && (first.ID == "" || r.Start.Before(first.Start)) {
			first = r
		}
	}
	_, body := HTTPGet(t, http.HandlerFunc(store.serveRequest), "/v1/requests/"+first.ID+"?explain=1")
	var resp ExplainResponse
	json.Unmarshal(body, &resp)
	if first.Start.Before(at(6)) && (resp.Explain.Matches || !strings.Contains(resp.Explain.Note, "no longer kept")) {
		t.Errorf("%s (from %v) with intervals dropped: matches %v, note %q", first.ID, first.Start, resp.Explain.Matches, resp.Explain.Note)
	}
}

// Request ids may hold '/' (X-Request-Id and the event API take any
// visible ASCII): GET /v1/requests/{id} finds them sent as they are and
// escaped, and the path `deadlabourd audit` asks for (requestPath) finds
// every id, even those the router would otherwise clean ("a//b").
func TestRequestLookupIDWithSlashes(t *testing.T) {
	store, recs := AuditFixture(t, "time", 100, time.Hour)
	ids := []string{"tenant/a/42", "a//b", "a/../b", "./x", "x%2Fy", "q?x#y", "trailing/"}
	for _, id := range ids {
		r := recs[0]
		r.ID = id
		store.AddRecord(r)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(admin.PatternRequest, store.serveRequest)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(u *url.URL) (int, string) {
		t.Helper()
		resp, err := srv.Client().Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Record  map[string]any     `json:"record"`
			Explain *admin.Explanation `json:"explain"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		id, _ := body.Record["request_id"].(string)
		if u.RawQuery == "explain=1" && resp.StatusCode == http.StatusOK && body.Explain == nil {
			t.Errorf("%s: no admin.Explanation", u)
		}
		return resp.StatusCode, id
	}
	base, _ := url.Parse(srv.URL)
	for _, id := range ids {
		u := *base
		u.Path, u.RawPath = admin.RequestPath(id)
		u.RawQuery = "explain=1"
		if code, got := get(&u); code != http.StatusOK || got != id {
			t.Errorf("%q escaped as %s: %d, record %q", id, u.String(), code, got)
		}
	}
	// Sent with its slashes as they are, as a person would type it.
	u := *base
	u.Path = "/v1/requests/tenant/a/42"
	for _, q := range []string{"", "explain=1"} {
		u.RawQuery = q
		if code, got := get(&u); code != http.StatusOK || got != "tenant/a/42" {
			t.Errorf("%s: %d, record %q", u.String(), code, got)
		}
	}
}
