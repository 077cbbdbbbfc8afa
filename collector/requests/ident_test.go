package requests

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A tenant header's value, like the event API's tenant, may be an API key
// in disguise: it is stored hashed (HMAC under the node secret, 16 hex
// digits), and as it is only when the operator opted in (raw) and it looks
// like a name. The raw value never appears otherwise.
func TestTenantHeaderHashedUnlessRaw(t *testing.T) {
	hmac16 := func(v string) string {
		mac := hmac.New(sha256.New, testSecret)
		mac.Write([]byte(v))
		return hex.EncodeToString(mac.Sum(nil))[:16]
	}
	long := strings.Repeat("t", maxTenant+1)
	for _, tt := range []struct {
		name, value string
		raw         bool
		want        string
	}{
		{"a key in the header", "sk-live-0123456789abcdef", false, hmac16("sk-live-0123456789abcdef")},
		{"a team name, hashed by default", "team-a", false, hmac16("team-a")},
		{"a team name, raw by choice", "team-a", true, "team-a"},
		{"raw, but too long for a name", long, true, hmac16(long)},
		{"raw, but not visible ASCII", "team a", true, hmac16("team a")},
		{"raw, padded", "  team-a ", true, "team-a"},
		{"no header: the key", "", true, hmac16(apiKey)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Authorization": {"Bearer " + apiKey}}
			if tt.value != "" {
				h.Set("X-Team", tt.value)
			}
			got := tenants{header: "X-Team", raw: tt.raw, secret: testSecret}.of(h)
			if got != tt.want {
				t.Errorf("tenant %q, want %q", got, tt.want)
			}
			if v := strings.TrimSpace(tt.value); v != "" && got == v && !tt.raw {
				t.Errorf("the header value %q is stored as it is without tenant_header_raw", v)
			}
		})
	}
}

// The event API's tenant is hashed unless TenantRaw, in the begin, the end
// and the abandoned span alike.
func TestEventTenantHashed(t *testing.T) {
	for _, raw := range []bool{false, true} {
		sink := &eventSink{}
		e, err := NewEvents(EventOptions{History: 15 * time.Minute, Devices: testDevices, TenantSecret: testSecret, TenantRaw: raw,
			Now: func() time.Time { return evNow }}, sink)
		if err != nil {
			t.Fatal(err)
		}
		want := tenants{secret: testSecret}.hash("team-a")
		if raw {
			want = "team-a"
		}
		for _, body := range []string{
			`{"id":"s","upstream":"tgi","tenant":"team-a","start":"` + ts(-time.Second) + `","end":"` + ts(0) + `"}`,
			`{"type":"begin","id":"b","upstream":"tgi","tenant":"team-a","start":"` + ts(-time.Second) + `"}`,
			`{"type":"end","id":"b","upstream":"tgi","end":"` + ts(0) + `"}`,
			`{"type":"begin","id":"x","upstream":"tgi","tenant":"team-a","start":"` + ts(-time.Second) + `"}`,
		} {
			if status, ans := post(t, e, body); status != http.StatusAccepted {
				t.Fatalf("%s: %d %v", body, status, ans)
			}
		}
		e.Expire(evNow.Add(16 * time.Minute))
		if len(sink.spans) != 5 {
			t.Fatalf("raw %v: %d spans, want 5", raw, len(sink.spans))
		}
		for _, s := range sink.spans {
			if s.Tenant != want {
				t.Errorf("raw %v: %v has tenant %q, want %q", raw, sink.calls, s.Tenant, want)
			}
		}
	}
}
