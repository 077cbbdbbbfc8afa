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

// hostileCase is one request with client-chosen model and tenant values
// line protocol cannot carry as tags as they are.
type hostileCase struct {
	id, model, tenant string
	event             bool   // through the event API, else the proxy
	wantModel         string // the model tag
	wantRaw           string // model_raw; "" when it must be absent
	wantTenant        string
}

// TestHostileModelAndTenant: model names and tenants with control
// characters, a trailing backslash or a backslash before a space, comma,
// '=' or '"' are accepted by the proxy and the event API, and every such
// request is recorded in the real InfluxDB: the tags are made writable
// (U+FFFD in place of what line protocol cannot carry), a model not in
// models[] is tagged "other", and the model as sent is kept in model_raw
// when its tag differs. None may go unrecorded, and clients naming models
// at will add no series.
func TestHostileModelAndTenant(t *testing.T) {
	influx := influxtest.Start(t)
	cfg := eventsDaemonConfig(t, influx)
	// Tenants kept as sent (else they are hashed, and harmless).
	cfg = strings.Replace(cfg, "    gpus: [0]\n", "    gpus: [0]\n    tenant_header: X-Tenant\n    tenant_header_raw: true\n", 1)
	cfg = strings.Replace(cfg, "admin:\n", "admin:\n  event_tenant_raw: true\n", 1)
	cfg += "models:\n  - name: llama\n  - name: plain-model\n"
	d := startDaemon(t, cfg, "h100:1")
	const bad = "\uFFFD"
	cases := []hostileCase{
		{"h-nl", "llama\n", "t1", false, "other", "llama" + bad, "t1"},
		{"h-bs", `llama\`, `t\`, false, "other", `llama\`, "t" + bad},
		{"h-space", `a\ b`, `a\,b`, false, "other", `a\ b`, "a" + bad + ",b"},
		{"h-eq", "m\x00\x7f", `x\=y`, false, "other", "m" + bad + bad, "x" + bad + "=y"},
		{"h-quote", `q\"r`, `q\"r`, false, "other", `q\"r`, "q" + bad + `"r`},
		{"h-ok", "plain-model", "t2", false, "plain-model", "", "t2"},
		{"h-llama", "llama", "t2", false, "llama", "", "t2"},
		{"e-none", "", "t2", true, "", "", "t2"},
		{"e-bell", "evt\abell", `e\`, true, "other", "evt" + bad + "bell", "e" + bad},
		{"e-bs", `evt\`, "t3", true, "other", `evt\`, "t3"},
		{"e-long", strings.Repeat("é", 128), "t3", true, "other", strings.Repeat("é", 128), "t3"},
	}
	for i := range 20 { // a client naming a new model each time
		cases = append(cases, hostileCase{fmt.Sprintf("e-new-%d", i), fmt.Sprintf("made-up-%d", i), "t4", true, "other", fmt.Sprintf("made-up-%d", i), "t4"})
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for _, c := range cases {
		model, _ := json.Marshal(c.model)
		if c.event {
			now := time.Now().UTC()
			body := fmt.Sprintf(`{"id":%q,"upstream":"up","model":%s,"tenant":%q,"start":%q,"end":%q}`, c.id, model, c.tenant,
				now.Add(-10*time.Millisecond).Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
			if status, err := postEvent(client, d.adminURL(), body); err != nil || status != http.StatusAccepted {
				t.Fatalf("%s: event API answered %d, %v", c.id, status, err)
			}
			continue
		}
		body := fmt.Sprintf(`{"model":%s,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, model)
		req, _ := http.NewRequest("POST", d.proxyURL("up")+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-Id", c.id)
		req.Header.Set("X-Tenant", c.tenant)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: proxy answered %d", c.id, res.StatusCode)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	rows := influx.Rows(t, "SELECT * FROM deadlabour_request")
	byID := map[string]influxtest.Row{}
	for _, r := range rows {
		id, _ := r.String("request_id")
		byID[id] = r
	}
	for _, c := range cases {
		r, ok := byID[c.id]
		if !ok {
			t.Errorf("%s (model %q, tenant %q): no record", c.id, c.model, c.tenant)
			continue
		}
		model, _ := r.String("model")
		tenant, _ := r.String("tenant")
		if cur, _ := r.String("currency"); cur != "USD" {
			t.Errorf("%s: currency %q, want USD (facility.currency's default)", c.id, cur)
		}
		raw, hasRaw := r.String("model_raw")
		if model != c.wantModel || tenant != c.wantTenant || raw != c.wantRaw || hasRaw != (c.wantRaw != "") {
			t.Errorf("%s: model %q, tenant %q, model_raw %q (%v); want %q, %q, %q", c.id, model, tenant, raw, hasRaw, c.wantModel, c.wantTenant, c.wantRaw)
		}
	}
	var models []string
	for _, r := range influx.Rows(t, `SHOW TAG VALUES FROM deadlabour_request WITH KEY = "model"`) {
		v, _ := r.String("value")
		models = append(models, v)
	}
	if strings.Join(models, ",") != "llama,other,plain-model" {
		t.Errorf("model tag values %q, want the two configured and other", models)
	}
	if strings.Contains(d.log.String(), "request record not written") {
		t.Errorf("records refused by the encoder:\n%s", d.log)
	}
}
