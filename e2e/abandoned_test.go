package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// TestEventBeginAbandonedAtShutdown: a request begun through the event API
// and never ended when the daemon stops (SIGTERM's path: event API closed,
// then the engine's final settle) is in InfluxDB as one record, status
// abandoned, with the upstream, model and tenant (hashed) its begin event named
// (no models are configured: the model tag is "other", the name model_raw).
func TestEventBeginAbandonedAtShutdown(t *testing.T) {
	influx := influxtest.Start(t)
	d := startDaemon(t, eventsDaemonConfig(t, influx), "h100:1")
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	begin := fmt.Sprintf(`{"type":"begin","id":"open/at/stop","upstream":"up","model":"m","tenant":"team-a","start":%q}`,
		time.Now().UTC().Format(time.RFC3339Nano))
	if status, err := postEvent(client, d.adminURL(), begin); err != nil || status != http.StatusAccepted {
		t.Fatalf("begin: %d %v", status, err)
	}
	time.Sleep(300 * time.Millisecond) // charged for a few meter intervals
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	rows := influx.Rows(t, `SELECT "request_id", "status", "upstream", "model_raw", "tenant", "gpu_energy_j", "history_truncated" FROM "deadlabour_request"`)
	if len(rows) != 1 {
		t.Fatalf("%d records, want the begun request's: %v", len(rows), rows)
	}
	r := rows[0]
	for k, want := range map[string]any{"request_id": "open/at/stop", "status": "abandoned", "upstream": "up", "model_raw": "m",
		"history_truncated": true} {
		if r[k] != want {
			t.Errorf("%s = %v, want %v (record %v)", k, r[k], want, r)
		}
	}
	// The tenant as begun, hashed (admin.event_tenant_raw is off).
	if tenant, _ := r.String("tenant"); len(tenant) != 16 || strings.Trim(tenant, "0123456789abcdef") != "" {
		t.Errorf("tenant = %q, want team-a's 16 hex digit hash", tenant)
	}
	if j, _ := r.Float("gpu_energy_j"); j <= 0 {
		t.Errorf("gpu_energy_j = %v: the open request was charged nothing", r["gpu_energy_j"])
	}
}

// TestEventEndAcrossRestart: a request begun through the event API is
// recorded as abandoned when the daemon stops; its end, posted to the next
// process (same spool directory), is answered as a duplicate and recorded
// no second time. A fresh id's end, with its start, is still recorded.
func TestEventEndAcrossRestart(t *testing.T) {
	influx := influxtest.Start(t)
	yaml := eventsDaemonConfig(t, influx)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now().UTC()
	d := startDaemon(t, yaml, "h100:1")
	begin := fmt.Sprintf(`{"type":"begin","id":"across","upstream":"up","model":"m","start":%q}`, start.Format(time.RFC3339Nano))
	if status, err := postEvent(client, d.adminURL(), begin); err != nil || status != http.StatusAccepted {
		t.Fatalf("begin: %d %v", status, err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	d = startDaemon(t, yaml, "h100:1")
	end := func(id string) (duplicates int) {
		t.Helper()
		body := fmt.Sprintf(`{"type":"end","id":%q,"upstream":"up","start":%q,"end":%q,"prompt_tokens":5,"completion_tokens":7}`,
			id, start.Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano))
		res, err := client.Post(d.adminURL()+"/v1/requests", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var ans struct {
			Accepted   int `json:"accepted"`
			Duplicates int `json:"duplicates"`
		}
		if err := json.NewDecoder(res.Body).Decode(&ans); err != nil || res.StatusCode != http.StatusAccepted || ans.Accepted+ans.Duplicates != 1 {
			t.Fatalf("end of %s: %d %+v %v", id, res.StatusCode, ans, err)
		}
		return ans.Duplicates
	}
	if n := end("across"); n != 1 {
		t.Errorf("end of the request abandoned at the restart: %d duplicates, want 1", n)
	}
	if n := end("fresh"); n != 0 {
		t.Errorf("end of a request never seen: %d duplicates, want 0 (recorded)", n)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, r := range influx.Rows(t, `SELECT "request_id", "status" FROM "deadlabour_request"`) {
		id, _ := r.String("request_id")
		st, _ := r.String("status")
		got[id] = append(got[id], st)
	}
	if len(got["across"]) != 1 || got["across"][0] != "abandoned" || len(got["fresh"]) != 1 {
		t.Errorf("records %v, want across once (abandoned) and fresh once", got)
	}
}
