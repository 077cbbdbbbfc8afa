package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const otlpBase = "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n"

func TestOTLPDefaults(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte(otlpBase), -1)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.OTLP
	if o.Enabled() || o.HTTPListen != DefaultOTLPHTTPListen || o.GRPCListen != DefaultOTLPGRPCListen || o.MaxDelay.D() != 10*time.Second {
		t.Errorf("defaults: %+v", o)
	}
	if got := cfg.SettleDelay(); got != 500*time.Millisecond {
		t.Errorf("settle delay without sources = %v", got)
	}
	cfg, err = Parse("on.yaml", []byte(otlpBase+"otlp:\n  grpc_listen: \"\"\n  sources:\n    - {service_name: vllm, upstream: a, model: m}\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.OTLP.Enabled() || cfg.OTLP.GRPCListen != "" || !cfg.OTLP.Traced("a") || cfg.OTLP.Traced("b") {
		t.Errorf("otlp: %+v", cfg.OTLP)
	}
	if got := cfg.SettleDelay(); got != 10*time.Second {
		t.Errorf("settle delay with sources = %v, want max_delay", got)
	}
}

func TestOTLPProblems(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown upstream": {"otlp:\n  sources:\n    - {service_name: vllm, upstream: b}\n", `on.yaml:7: otlp.sources[0].upstream: "b" is not the name of a configured upstream`},
		"no service":       {"otlp:\n  sources:\n    - {upstream: a}\n", "otlp.sources[0].service_name: every source needs"},
		"unknown key":      {"otlp:\n  sources:\n    - {service_name: v, upstream: a, gpus: [0]}\n", `on.yaml:7: otlp.sources[0].gpus: unknown key "gpus"`},
		"bad listen":       {"otlp:\n  http_listen: nowhere\n  sources:\n    - {service_name: v, upstream: a}\n", "otlp.http_listen: want host:port"},
		"proxy clash":      {"otlp:\n  http_listen: 0.0.0.0:8081\n  sources:\n    - {service_name: v, upstream: a}\n", `otlp.http_listen: "0.0.0.0:8081" is also upstreams[0].listen`},
		"admin clash":      {"otlp:\n  grpc_listen: 127.0.0.1:9464\n  sources:\n    - {service_name: v, upstream: a}\n", `otlp.grpc_listen: "127.0.0.1:9464" is also admin.listen`},
		"own clash":        {"otlp:\n  grpc_listen: 127.0.0.1:4318\n  sources:\n    - {service_name: v, upstream: a}\n", `otlp.grpc_listen: "127.0.0.1:4318" is also otlp.http_listen`},
		"both off":         {"otlp:\n  http_listen: \"\"\n  grpc_listen: \"\"\n  sources:\n    - {service_name: v, upstream: a}\n", "both empty"},
		"delay":            {"otlp:\n  max_delay: 20m\n  sources:\n    - {service_name: v, upstream: a}\n", "otlp.max_delay: must be shorter than attribution.history"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("on.yaml", []byte(otlpBase+tc.yaml), -1)
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
