package config

import (
	"fmt"
	"net"
	"strings"
)

// allListens are every listener the daemon opens: the proxies, the admin
// and metrics listeners, and the OTLP receiver's when it runs.
func (c *Config) allListens() []listen {
	out := c.daemonListens()
	if c.OTLP.Enabled() {
		for _, l := range []listen{{"otlp.http_listen", c.OTLP.HTTPListen}, {"otlp.grpc_listen", c.OTLP.GRPCListen}} {
			if l.addr != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

// listenClashes refuses two listeners on one port of a common address:
// run could open only the first. A wildcard (0.0.0.0, [::], empty host)
// takes the port on every address, so it clashes with any listener on that
// port; localhost is loopback. Port 0 never clashes.
func (v *validator) listenClashes() {
	ls := v.c.allListens()
	for j, l := range ls {
		for _, other := range ls[:j] {
			if listensClash(l.addr, other.addr) {
				v.add(l.key, "%q is also %s (%s): every listener needs a port of its own", l.addr, other.key, other.addr)
				break
			}
		}
	}
}

// adminToken refuses an admin listener beyond loopback without a token:
// anyone who reaches it could post events and read the records and the
// spool. The metrics listener serves only /metrics, /healthz and /readyz,
// so it needs none.
func (v *validator) adminToken() {
	a := v.c.Admin
	if a.Listen == "" || a.TokenFile != "" {
		return
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil || loopbackHost(host) {
		return
	}
	v.add("admin.listen", "%q listens beyond loopback without admin.token_file: anyone who reaches it could post events and read the records; set admin.token_file (16+ bytes, e.g. openssl rand -hex 32) or listen on 127.0.0.1 (admin.metrics_listen serves /metrics, /healthz and /readyz without a token)", a.Listen)
}

// loopbackHost reports whether a listen host is localhost or a loopback
// address.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listensClash reports whether two listen addresses take the same port on
// a common address: the same host, a wildcard on either side, or
// localhost and a loopback address. Port 0
// (any free port) never clashes.
func listensClash(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	wild := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || ip != nil && ip.IsUnspecified()
	}
	return strings.EqualFold(ah, bh) || wild(ah) || wild(bh) ||
		strings.EqualFold(ah, "localhost") && loopbackHost(bh) || strings.EqualFold(bh, "localhost") && loopbackHost(ah)
}

// listen is a listen address and its key.
type listen struct{ key, addr string }

// daemonListens are the proxies' and the admin listener's addresses.
func (c *Config) daemonListens() []listen {
	var out []listen
	for i, u := range c.Upstreams {
		out = append(out, listen{fmt.Sprintf("upstreams[%d].listen", i), u.Listen})
	}
	if c.Admin.Listen != "" {
		out = append(out, listen{"admin.listen", c.Admin.Listen})
	}
	if c.Admin.MetricsListen != "" {
		out = append(out, listen{"admin.metrics_listen", c.Admin.MetricsListen})
	}
	return out
}
