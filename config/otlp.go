package config

import (
	"fmt"
	"strings"
	"time"
)

// OTLP configures the OpenTelemetry trace receiver (collector/otlp): the
// inference servers' own spans as a request source. Its listeners open
// only when Sources is not empty: a daemon configured without sources
// listens on no OTLP port.
type OTLP struct {
	// HTTPListen serves OTLP/HTTP (POST /v1/traces); "": off.
	HTTPListen string `yaml:"http_listen"`
	// GRPCListen serves OTLP/gRPC; "": off.
	GRPCListen string `yaml:"grpc_listen"`
	// TokenFile holds the bearer token every export must carry (16+
	// bytes, one word, as admin.token_file); "": none.
	TokenFile string `yaml:"token_file"`
	// MaxBodyBytes caps one export request, compressed and decompressed.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// MaxDelay is how long after its request ended a span may arrive and
	// still be attributed exactly: the ledger settles that much later, and
	// a proxy's record waits that long for the request's span.
	MaxDelay Duration `yaml:"max_delay"`
	// Sources map a resource (service.name, optionally service.instance.id
	// and host.name) to an upstream, whose gpus the spans are charged to.
	Sources []OTLPSource `yaml:"sources"`
}

// OTLPSource is one inference server that exports traces.
type OTLPSource struct {
	ServiceName       string `yaml:"service_name"`
	ServiceInstanceID string `yaml:"service_instance_id"`
	HostName          string `yaml:"host_name"`
	// Upstream names an entry of upstreams: its name is the spans'
	// upstream, its gpus their devices.
	Upstream string `yaml:"upstream"`
	// Model is the model of spans that name none.
	Model string `yaml:"model"`
}

// Defaults of the otlp section.
const (
	DefaultOTLPHTTPListen   = "127.0.0.1:4318"
	DefaultOTLPGRPCListen   = "127.0.0.1:4317"
	DefaultOTLPMaxBodyBytes = 8 << 20
	DefaultOTLPMaxDelay     = 10 * time.Second
)

func defaultOTLP() OTLP {
	return OTLP{HTTPListen: DefaultOTLPHTTPListen, GRPCListen: DefaultOTLPGRPCListen,
		MaxBodyBytes: ByteSize(DefaultOTLPMaxBodyBytes), MaxDelay: Duration(DefaultOTLPMaxDelay)}
}

// Enabled says whether the receiver runs: it has sources.
func (o OTLP) Enabled() bool { return len(o.Sources) > 0 }

// Traced says whether an upstream has a trace source.
func (o OTLP) Traced(upstream string) bool {
	for _, s := range o.Sources {
		if s.Upstream == upstream {
			return true
		}
	}
	return false
}

// SettleDelay is the ledger's settle delay: attribution.settle_delay, or
// otlp.max_delay when the receiver runs and that is longer (a late span's
// intervals are still held).
func (c *Config) SettleDelay() time.Duration {
	d := c.Attribution.SettleDelay.D()
	if c.OTLP.Enabled() {
		d = max(d, c.OTLP.MaxDelay.D())
	}
	return d
}

// validateOTLP checks the otlp section.
func (v *validator) validateOTLP() {
	o := v.c.OTLP
	if o.MaxBodyBytes < 1<<10 || o.MaxBodyBytes > 1<<30 {
		v.add("otlp.max_body_bytes", "must be 1KiB to 1GiB, got %d", o.MaxBodyBytes)
	}
	if o.MaxDelay < 0 {
		v.add("otlp.max_delay", "must be zero or more, got %s", o.MaxDelay.D())
	} else if o.Enabled() && o.MaxDelay >= v.c.Attribution.History {
		v.add("otlp.max_delay", "must be shorter than attribution.history (%s), got %s", v.c.Attribution.History.D(), o.MaxDelay.D())
	}
	upstreams := map[string]bool{}
	for _, u := range v.c.Upstreams {
		upstreams[u.Name] = true
	}
	type match struct{ service, instance, host string }
	seen := map[match]int{}
	for i, s := range o.Sources {
		key := fmt.Sprintf("otlp.sources[%d]", i)
		if strings.TrimSpace(s.ServiceName) == "" {
			v.add(key+".service_name", "every source needs the service.name its server exports under")
		}
		switch {
		case s.Upstream == "":
			v.add(key+".upstream", "every source needs an upstream: the name of an entry of upstreams, whose gpus its spans are charged to")
		case !upstreams[s.Upstream]:
			v.add(key+".upstream", "%q is not the name of a configured upstream", s.Upstream)
		}
		m := match{s.ServiceName, s.ServiceInstanceID, s.HostName}
		if j, ok := seen[m]; ok {
			v.add(key, "matches the same resources as otlp.sources[%d]: the first wins, this one never does", j)
		} else {
			seen[m] = i
		}
	}
	if !o.Enabled() {
		return
	}
	if o.HTTPListen == "" && o.GRPCListen == "" {
		v.add("otlp.sources", "sources are configured but http_listen and grpc_listen are both empty: no span can arrive")
	}
	for _, l := range []listen{{"otlp.http_listen", o.HTTPListen}, {"otlp.grpc_listen", o.GRPCListen}} {
		if l.addr != "" {
			v.listenAddr(l.key, l.addr)
		}
	}
}
