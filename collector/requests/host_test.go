package requests

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestPreserveHost: the upstream sees the client's Host or the target's as
// PreserveHost says; unset, the client's for an http target on an IP
// literal or localhost, the target's for an https target (whose
// certificate and SNI name the target) or a host by name.
func TestPreserveHost(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		name     string
		tls      bool
		host     string // the target's host, instead of 127.0.0.1
		preserve *bool
		client   bool // want the client's Host
	}{
		{"http ip, default", false, "", nil, true},
		{"http localhost, default", false, "localhost", nil, true},
		{"http host name, default", false, "inference.test", nil, false},
		{"http ip, preserve_host false", false, "", &no, false},
		{"https, default", true, "", nil, false},
		{"https, preserve_host true", true, "", &yes, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hosts := make(chan string, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hosts <- r.Host
				io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
			})
			up := httptest.NewUnstartedServer(h)
			if tt.tls {
				up.StartTLS()
			} else {
				up.Start()
			}
			defer up.Close()
			target, _ := url.Parse(up.URL)
			if tt.host != "" {
				target.Host = tt.host + ":" + target.Port()
			}
			opts := Options{Name: "u", Target: target.String(), TenantSecret: testSecret, PreserveHost: tt.preserve}
			if tt.tls {
				opts.Transport = up.Client().Transport
			} else if tt.host != "" && tt.host != "localhost" {
				// A name no resolver knows: dial the upstream's address.
				addr := up.Listener.Addr().String()
				opts.Transport = &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}}
			}
			p, err := New(opts, newRecorder())
			if err != nil {
				t.Fatal(err)
			}
			defer p.CloseIdleConnections()
			front := httptest.NewServer(p)
			defer front.Close()
			req, _ := http.NewRequestWithContext(t.Context(), "POST", front.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"x"}`))
			req.Host = "llm.example.test"
			res, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", res.StatusCode)
			}
			want := target.Host
			if tt.client {
				want = "llm.example.test"
			}
			if got := <-hosts; got != want {
				t.Errorf("upstream saw Host %q, want %q", got, want)
			}
		})
	}
}
