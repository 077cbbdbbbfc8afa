package config

import (
	"errors"
	"strings"
	"testing"
)

// Listeners that run could not all open, and an admin listener beyond
// loopback without a token: refused by Validate, so by check-config and
// run alike.
func TestListenProblems(t *testing.T) {
	const up = "upstreams:\n  - name: a\n    listen: %s\n    target: http://127.0.0.1:8000\n"
	two := func(a, b string) string {
		return "upstreams:\n  - name: a\n    listen: " + a + "\n    target: http://127.0.0.1:8000\n" +
			"  - name: b\n    listen: " + b + "\n    target: http://127.0.0.1:8001\n"
	}
	for _, tt := range []struct {
		name, yaml, want string // want "": no problem
	}{
		{"same upstream listen", two("127.0.0.1:8081", "127.0.0.1:8081"), `x.yaml:6: upstreams[1].listen: "127.0.0.1:8081" is also upstreams[0].listen (127.0.0.1:8081): every listener needs a port of its own`},
		{"loopback and wildcard", two("127.0.0.1:8081", "0.0.0.0:8081"), `upstreams[1].listen: "0.0.0.0:8081" is also upstreams[0].listen`},
		{"wildcard and loopback", two("0.0.0.0:8081", "127.0.0.1:8081"), `upstreams[1].listen: "127.0.0.1:8081" is also upstreams[0].listen`},
		{"IPv6 wildcard", two(`"[::]:8081"`, "127.0.0.1:8081"), `upstreams[1].listen: "127.0.0.1:8081" is also`},
		{"empty host", two(":8081", "10.0.0.1:8081"), `upstreams[1].listen: "10.0.0.1:8081" is also`},
		{"localhost and 127.0.0.1", two("localhost:8081", "127.0.0.1:8081"), `upstreams[1].listen: "127.0.0.1:8081" is also`},
		{"two addresses", two("127.0.0.1:8081", "10.0.0.1:8081"), ""},
		{"other port", two("0.0.0.0:8081", "127.0.0.1:8082"), ""},
		{"port 0 twice", two("127.0.0.1:0", "0.0.0.0:0"), ""},
		{"upstream is admin", strings.Replace(up, "%s", "127.0.0.1:9464", 1), `admin.listen: "127.0.0.1:9464" is also upstreams[0].listen`},
		{"metrics on the admin port", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  metrics_listen: 0.0.0.0:9464\n", `admin.metrics_listen: "0.0.0.0:9464" is also admin.listen (127.0.0.1:9464)`},
		{"otlp on the metrics port", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  metrics_listen: 0.0.0.0:9465\notlp:\n  http_listen: 127.0.0.1:9465\n  sources:\n    - {service_name: v, upstream: a}\n", `otlp.http_listen: "127.0.0.1:9465" is also admin.metrics_listen`},
		{"otlp off takes no port", strings.Replace(up, "%s", "127.0.0.1:4318", 1), ""},
		{"admin beyond loopback without token", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  listen: 0.0.0.0:9464\n", `x.yaml:6: admin.listen: "0.0.0.0:9464" listens beyond loopback without admin.token_file`},
		{"admin on every address without token", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  listen: :9464\n", `admin.listen: ":9464" listens beyond loopback`},
		{"admin on an address without token", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  listen: 10.0.0.1:9464\n", `admin.listen: "10.0.0.1:9464" listens beyond loopback`},
		{"admin beyond loopback with token", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  listen: 0.0.0.0:9464\n  token_file: /run/secrets/admin\n", ""},
		{"admin on localhost", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  listen: localhost:9464\n", ""},
		{"metrics beyond loopback without token", strings.Replace(up, "%s", "127.0.0.1:8081", 1) + "admin:\n  metrics_listen: 0.0.0.0:9465\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tt.yaml), -1)
			var ce *Error
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.want != "" && (!errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want %q", err, tt.want)
			case ce != nil && len(ce.Problems) != 1:
				t.Errorf("%d problems, want 1: %v", len(ce.Problems), err)
			}
		})
	}
}
