package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/deadlabour/deadlabour/internal/redact"
)

// Resolver resolves host names; net.DefaultResolver is one.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// interfaceAddrs are this machine's addresses (a variable for tests).
var interfaceAddrs = net.InterfaceAddrs

// lookupTimeout bounds resolving one upstream's host.
const lookupTimeout = 3 * time.Second

// Preflight checks what Validate cannot from the file alone, everything
// `run` would refuse at start: the spool directory (creatable and
// writable), the token and secret files (present, readable, long enough),
// and upstream targets that resolve (r: nil for net.DefaultResolver; a
// name that does not resolve is no problem here) to one of the daemon's
// own listeners. It opens no listener and leaves nothing behind. Both
// `check-config` and `run` (before opening anything) call it on a valid
// configuration.
func (c *Config) Preflight(ctx context.Context, r Resolver) []Problem {
	if r == nil {
		r = net.DefaultResolver
	}
	v := &validator{c: c}
	v.spoolDir()
	v.secretFiles()
	v.resolvedSelfTargets(ctx, r)
	sortProblems(v.problems)
	return v.problems
}

// spoolDir checks that the spool directory is, or can be made, a
// directory the daemon writes to: not under a regular file, not on /proc
// or /sys, and writable (a temporary file is created and removed in it, or
// in its nearest existing parent).
func (v *validator) spoolDir() {
	dir := v.c.Spool.Dir
	if dir == "" {
		return // Validate says so
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		v.add("spool.dir", "%v", err)
		return
	}
	for _, fs := range []string{"/proc", "/sys"} {
		if abs == fs || strings.HasPrefix(abs, fs+"/") {
			v.add("spool.dir", "%s is under %s, a kernel file system: want a directory on persistent storage, e.g. /var/lib/deadlabour", dir, fs)
			return
		}
	}
	p := abs
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				what := "is a file"
				if p != abs {
					what = "is under a file (" + p + ")"
				}
				v.add("spool.dir", "%s %s, not a directory", dir, what)
				return
			}
			break
		}
		parent := filepath.Dir(p)
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) || parent == p {
			v.add("spool.dir", "%v (checked by uid %d)", err, os.Geteuid())
			return
		}
		p = parent
	}
	f, err := os.CreateTemp(p, ".deadlabour-preflight-*")
	if err != nil {
		what := "not writable"
		if p != abs {
			what = fmt.Sprintf("cannot be created: its nearest existing parent %s is not writable", p)
		}
		if errors.Is(err, os.ErrPermission) {
			what += fmt.Sprintf(" by uid %d (check as the daemon's user, e.g. sudo -u deadlabour)", os.Geteuid())
		}
		v.add("spool.dir", "%s %s: %v", dir, what, err)
		return
	}
	f.Close()
	os.Remove(f.Name())
}

// secretFiles reads the files run reads at start: the admin and OTLP
// bearer tokens, the tenant secret (or the one kept in the spool).
func (v *validator) secretFiles() {
	c := v.c
	if c.Admin.Listen != "" && c.Admin.TokenFile != "" {
		if _, err := ReadToken(c.Admin.TokenFile); err != nil {
			v.add("admin.token_file", "%v", err)
		}
	}
	if c.OTLP.Enabled() && c.OTLP.TokenFile != "" {
		if _, err := ReadToken(c.OTLP.TokenFile); err != nil {
			v.add("otlp.token_file", "%v", err)
		}
	}
	if path := c.Attribution.TenantSecretFile; path != "" {
		if _, err := ReadTenantSecret(path); err != nil {
			v.add("attribution.tenant_secret_file", "%v", err)
		}
	} else if c.Spool.Dir != "" {
		// Created on first start; one already there must do.
		path := filepath.Join(c.Spool.Dir, "tenant.key")
		if _, err := os.Lstat(path); err == nil {
			if _, err := ReadTenantSecret(path); err != nil {
				v.add("spool.dir", "%v (delete it for a new one: tenant names change)", err)
			}
		}
	}
	// influx.token_file is left to run: under systemd it is a credential
	// (/run/credentials/...) that exists only inside the unit.
}

// MinToken is the shortest bearer token a token file may hold.
const MinToken = 16

// ReadToken reads a bearer token (admin.token_file, otlp.token_file): the
// file's content less surrounding space, one word of MinToken bytes or
// more.
func ReadToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	token := bytes.TrimSpace(b)
	if len(token) < MinToken {
		return nil, fmt.Errorf("%s holds a token of %d bytes; want at least %d (e.g. openssl rand -hex 32)", path, len(token), MinToken)
	}
	if bytes.ContainsAny(token, " \t\r\n") {
		return nil, fmt.Errorf("%s: the token must be one word", path)
	}
	return token, nil
}

// MinTenantSecret is the shortest tenant secret (HMAC key) accepted.
const MinTenantSecret = 16

// ReadTenantSecret reads the HMAC key of tenants, MinTenantSecret bytes
// or more.
func ReadTenantSecret(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant secret: %w", err)
	}
	if len(key) < MinTenantSecret {
		return nil, fmt.Errorf("tenant secret %s: %d bytes, want at least %d (e.g. head -c 32 /dev/urandom)", path, len(key), MinTenantSecret)
	}
	return key, nil
}

// resolvedSelfTargets refuses an upstream whose target's host resolves
// (an /etc/hosts alias of 127.0.0.1, a DNS name of this machine) to one of
// the daemon's own listeners: every request would loop through the proxy
// until the daemon runs out of file descriptors. A wildcard listener
// takes every address of this machine.
func (v *validator) resolvedSelfTargets(ctx context.Context, r Resolver) {
	listens := v.c.daemonListens()
	var local []net.IP // this machine's addresses, asked once when needed
	localAsked := false
	for i, u := range v.c.Upstreams {
		t, err := url.Parse(u.Target)
		if err != nil || t.Hostname() == "" {
			continue
		}
		port := t.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[t.Scheme]
		}
		ips := resolve(ctx, r, t.Hostname())
	listens:
		for _, l := range listens {
			for _, ip := range ips {
				self := sameEndpoint(l.addr, ip.String(), port)
				if !self && wildcardOn(l.addr, port, ip) {
					if !localAsked {
						local, localAsked = localIPs(), true
					}
					self = containsIP(local, ip)
				}
				if self {
					v.add(fmt.Sprintf("upstreams[%d].target", i), "%q resolves to %s, this daemon's own %s (%s): the proxy would forward to itself; point it at the inference server",
						redact.URL(u.Target), ip, l.key, l.addr)
					continue listens
				}
			}
		}
	}
}

// resolve is host's addresses: itself when an IP address, else what r
// answers (none when it fails).
func resolve(ctx context.Context, r Resolver, host string) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips
}

// wildcardOn reports whether listen is a wildcard on port that takes ip's
// family: 0.0.0.0 IPv4, [::] and an empty host both.
func wildcardOn(listen, port string, ip net.IP) bool {
	h, p, err := net.SplitHostPort(listen)
	if err != nil || p != port || p == "0" {
		return false
	}
	lip := net.ParseIP(h)
	switch {
	case h == "" || lip != nil && lip.Equal(net.IPv6unspecified):
		return true
	case lip != nil && lip.Equal(net.IPv4zero):
		return ip.To4() != nil
	}
	return false
}

func localIPs() []net.IP {
	addrs, err := interfaceAddrs()
	if err != nil {
		return nil
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
