package main

import (
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
