package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/audit"
	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
	"github.com/deadlabour/deadlabour/estimator"
)

// The store's answers as `deadlabourd audit` prints them.

// Two records may share a request id (the same X-Request-Id sent twice, an
// event-API request recorded again after a restart): both are kept and
// shown, each with its own admin.Explanation that matches, and eviction goes by
// the order records came in, so the newer of them outlives older records
// of other ids.
func TestAuditSameID(t *testing.T) {
	const max = 5
	store, recs := audit.AuditFixture(t, "tokens", max, time.Hour)
	// A fresh store of the same parameters, the fixture's settlements.
	store = audit.NewLike(store, max, time.Hour)
	var served []estimator.Record
	for _, r := range recs {
		if r.Served {
			served = append(served, r)
		}
	}
	first, second := served[1], served[6] // different charges, made one id below
	second.ID = first.ID
	add := func(rs ...estimator.Record) {
		for _, r := range rs {
			store.AddRecord(r)
		}
	}
	// first, two others, the second of first's id, three more: first and
	// the next are the oldest and go; the second of first's id stays.
	add(first, served[2], served[3], second, served[4], served[5], served[0])
	h := store.Handler()
	code, body := audit.HTTPGet(t, h, "/v1/requests/"+first.ID+"?explain=1")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var one audit.ExplainResponse
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatal(err)
	}
	if one.Record["time"] != second.Time.UTC().Format(time.RFC3339Nano) || !bytes.Contains(body, []byte(`"same_id_records":1`)) ||
		bytes.Contains(body, []byte(`"records"`)) {
		t.Errorf("after eviction: want the second record of %s alone, got %s", first.ID, body)
	}
	// Once more with both kept.
	add(served[7], first, served[8], second)
	code, body = audit.HTTPGet(t, h, "/v1/requests/"+first.ID+"?explain=1")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var several struct {
		RequestID string                  `json:"request_id"`
		SameID    int                     `json:"same_id_records"`
		Record    map[string]any          `json:"record"`
		Records   []audit.ExplainResponse `json:"records"`
	}
	if err := json.Unmarshal(body, &several); err != nil {
		t.Fatal(err)
	}
	if several.RequestID != first.ID || several.SameID != 2 || len(several.Records) != 2 || several.Record != nil {
		t.Fatalf("two records of one id: %s", body)
	}
	for i, want := range []estimator.Record{first, second} {
		got := several.Records[i]
		if got.Record["time"] != want.Time.UTC().Format(time.RFC3339Nano) || got.Record["gpu_energy_j"] != want.GPUEnergyJ {
			t.Errorf("record %d: time %v, gpu_energy_j %v; want %v, %v", i, got.Record["time"], got.Record["gpu_energy_j"], want.Time, want.GPUEnergyJ)
		}
		if !got.Explain.Matches || len(got.Explain.Devices) == 0 {
			t.Errorf("record %d: admin.Explanation matches %v (%v): %s", i, got.Explain.Matches, got.Explain.MaxRelDiff, got.Explain.Note)
		}
	}
	if several.Records[0].Record["gpu_energy_j"] == several.Records[1].Record["gpu_energy_j"] {
		t.Errorf("the fixture's two records charge the same: the test cannot tell them apart")
	}
	// Without explain: the records alone.
	if _, body := audit.HTTPGet(t, h, "/v1/requests/"+first.ID); bytes.Contains(body, []byte(`"explain"`)) || !bytes.Contains(body, []byte(`"same_id_records":2`)) {
		t.Errorf("without explain: %s", body)
	}
	if store.Kept() != max {
		t.Errorf("%d records kept, want %d", store.Kept(), max)
	}

	// deadlabourd audit prints both.
	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		store.Register(mux)
		return mux
	}())
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"audit", "--admin", strings.TrimPrefix(srv.URL, "http://"), first.ID}, &out, &errb); code != 0 {
		t.Fatalf("audit: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"2 records share request id " + first.ID, "record 1 of 2", "record 2 of 2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit output lacks %q:\n%s", want, out.String())
		}
	}
	if c := strings.Count(out.String(), "matches the record"); c != 2 {
		t.Errorf("audit output: %d records match, want 2:\n%s", c, out.String())
	}
}

// One answer shows at most admin.RequestShowMax records of an id (fewer with
// ?limit=), the newest, and says how many the id has; deadlabourd audit
// numbers them among all.
func TestAuditShowCap(t *testing.T) {
	store, recs := audit.AuditFixture(t, "time", 1000, time.Hour)
	const n = admin.RequestShowMax + 50
	var times []string
	for i := range n {
		r := recs[i%len(recs)]
		r.ID = "constant"
		r.Time = r.Time.Add(time.Duration(i) * time.Microsecond) // told apart by time, as in InfluxDB
		store.AddRecord(r)
		times = append(times, r.Time.UTC().Format(time.RFC3339Nano))
	}
	h := store.Handler()
	type several struct {
		SameID  int                     `json:"same_id_records"`
		Shown   int                     `json:"records_shown"`
		Note    string                  `json:"note"`
		Record  map[string]any          `json:"record"`
		Records []audit.ExplainResponse `json:"records"`
	}
	for _, c := range []struct {
		query string
		shown int
	}{{"?explain=1", admin.RequestShowMax}, {"", admin.RequestShowMax}, {"?explain=1&limit=3", 3}, {fmt.Sprintf("?limit=%d", admin.RequestShowMax), admin.RequestShowMax}, {"?limit=1", 1}} {
		code, body := audit.HTTPGet(t, h, "/v1/requests/constant"+c.query)
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
		if code, body := audit.HTTPGet(t, h, "/v1/requests/constant?limit="+bad); code != http.StatusBadRequest ||
			!bytes.Contains(body, []byte(fmt.Sprintf(`limit=\"%s\": want a whole number of records from 1 to %d`, bad, admin.RequestShowMax))) {
			t.Errorf("limit=%s: %d %s", bad, code, body)
		}
	}

	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		store.Register(mux)
		return mux
	}())
	defer srv.Close()
	adminAddr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		args  []string
		shown int
	}{{nil, admin.RequestShowMax}, {[]string{"--limit", "2"}, 2}} {
		var out, errb bytes.Buffer
		args := append(append([]string{"audit", "--admin", adminAddr}, c.args...), "constant")
		if code := cli.Run(context.Background(), args, &out, &errb); code != 0 {
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
	if code := cli.Run(context.Background(), []string{"audit", "--admin", adminAddr, "--limit", "101", "constant"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "--limit 101: want 1 to 100") {
		t.Errorf("--limit 101: exit %d, %s", code, errb.String())
	}
}

// audit reads the admin address and token from the config.
func TestAuditUsesConfig(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		admin.WriteJSON(w, http.StatusNotFound, map[string]any{"error": "request \"x\" is not among the 3 most recent records kept"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("s3cret-0123456789abcdef\n"), 0o600)
	cfgPath := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("admin:\n  listen: %s\n  token_file: %s\n", strings.TrimPrefix(srv.URL, "http://"), tok)), 0o600)
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"audit", "--config", cfgPath, "x"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "not among the 3") {
		t.Errorf("exit %d, %q", code, errb.String())
	}
	if got.Get("Authorization") != "Bearer s3cret-0123456789abcdef" {
		t.Errorf("Authorization %q, want the token file's", got.Get("Authorization"))
	}
	if code := cli.Run(context.Background(), []string{"audit"}, &out, &errb); code != 2 {
		t.Errorf("no id: exit %d, want 2", code)
	}
}
