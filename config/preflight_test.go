package config

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeResolver answers from a map, as /etc/hosts would.
type fakeResolver map[string][]string

func (f fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	ips, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IPAddr
	for _, s := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("token", "0123456789abcdef0123\n")
	short := write("short", "12345\n")
	secret := write("secret", "0123456789abcdef")
	secret6 := write("secret6", "123456")
	file := write("file", "not a directory")
	readOnly := filepath.Join(dir, "ro")
	os.Mkdir(readOnly, 0o500)
	badKeySpool := filepath.Join(dir, "badkey")
	os.Mkdir(badKeySpool, 0o700)
	os.WriteFile(filepath.Join(badKeySpool, "tenant.key"), []byte("short"), 0o600)

	interfaceAddrs = func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}, &net.IPNet{IP: net.IPv4(10, 1, 2, 3), Mask: net.CIDRMask(24, 32)}}, nil
	}
	t.Cleanup(func() { interfaceAddrs = net.InterfaceAddrs })
	hosts := fakeResolver{"alias": {"127.0.0.1"}, "me": {"10.1.2.3"}, "gpu-box": {"10.9.9.9"}, "v6": {"::1"}}

	upstream := func(listen, target string) string {
		return "upstreams:\n  - name: a\n    listen: " + listen + "\n    target: " + target + "\n"
	}
	ok := upstream("127.0.0.1:8081", "http://127.0.0.1:8000")
	spool := func(d string) string { return "spool:\n  dir: " + d + "\n" }
	good := spool(filepath.Join(dir, "spool"))
	for _, tt := range []struct {
		name, yaml, want string // want "": no problem
		rootless         bool   // root writes anywhere: skipped as root
	}{
		{"ok", ok + good, "", false},
		{"spool created under existing dirs", ok + spool(filepath.Join(dir, "new", "deeper", "spool")), "", false},
		{"spool is a file", ok + spool(file), "spool.dir: " + file + " is a file, not a directory", false},
		{"spool under a file", ok + spool(filepath.Join(file, "spool")), "is under a file (" + file + ")", false},
		{"spool in /proc", ok + spool("/proc/deadlabour"), "spool.dir: /proc/deadlabour is under /proc, a kernel file system", false},
		{"spool in /sys", ok + spool("/sys/fs/deadlabour"), "is under /sys", false},
		{"spool read-only", ok + spool(readOnly), "spool.dir: " + readOnly + " not writable", true},
		{"spool parent read-only", ok + spool(filepath.Join(readOnly, "spool")), "its nearest existing parent " + readOnly + " is not writable", true},
		{"short tenant key in the spool", ok + spool(badKeySpool), "spool.dir: tenant secret " + badKeySpool + "/tenant.key: 5 bytes, want at least 16", false},
		{"admin token ok", ok + good + "admin:\n  token_file: " + token + "\n", "", false},
		{"admin token missing", ok + good + "admin:\n  token_file: " + dir + "/none\n", "admin.token_file: open " + dir + "/none: no such file", false},
		{"admin token of 5 bytes", ok + good + "admin:\n  token_file: " + short + "\n", "admin.token_file: " + short + " holds a token of 5 bytes; want at least 16", false},
		{"admin off, token unread", ok + good + "admin:\n  listen: \"\"\n  token_file: " + short + "\n", "", false},
		{"otlp token of 5 bytes", ok + good + "otlp:\n  token_file: " + short + "\n  sources:\n    - {service_name: v, upstream: a}\n", "otlp.token_file: " + short + " holds a token of 5 bytes", false},
		{"tenant secret ok", ok + good + "attribution:\n  tenant_secret_file: " + secret + "\n", "", false},
		{"tenant secret of 6 bytes", ok + good + "attribution:\n  tenant_secret_file: " + secret6 + "\n", "attribution.tenant_secret_file: tenant secret " + secret6 + ": 6 bytes, want at least 16", false},
		{"tenant secret missing", ok + good + "attribution:\n  tenant_secret_file: " + dir + "/none\n", "attribution.tenant_secret_file: tenant secret: open", false},
		{"influx token left to run (a systemd credential)", ok + good + "influx:\n  token_env: \"\"\n  token_file: " + dir + "/none\n", "", false},
		{"target an /etc/hosts alias of 127.0.0.1", upstream("127.0.0.1:8081", "http://u:hunter2@alias:8081/v1") + good,
			`x.yaml:4: upstreams[0].target: "http://u:xxxxx@alias:8081/v1" resolves to 127.0.0.1, this daemon's own upstreams[0].listen (127.0.0.1:8081): the proxy would forward to itself`, false},
		{"alias of the admin listener", upstream("127.0.0.1:8081", "http://alias:9464") + good, "resolves to 127.0.0.1, this daemon's own admin.listen", false},
		{"alias of a wildcard listen", upstream("0.0.0.0:8081", "http://alias:8081") + good, "own upstreams[0].listen (0.0.0.0:8081)", false},
		{"alias of ::1 on [::]", upstream(`"[::]:8081"`, "http://v6:8081") + good, "resolves to ::1", false},
		{"name of this machine on a wildcard listen", upstream("0.0.0.0:8081", "http://me:8081") + good, "resolves to 10.1.2.3, this daemon's own upstreams[0].listen", false},
		{"address of this machine on a wildcard listen", upstream("0.0.0.0:8081", "http://10.1.2.3:8081") + good, "resolves to 10.1.2.3", false},
		{"default port", upstream("0.0.0.0:80", "http://me") + good, "resolves to 10.1.2.3", false},
		{"name of this machine, loopback listen", upstream("127.0.0.1:8081", "http://me:8081") + good, "", false},
		{"alias, other port", upstream("127.0.0.1:8081", "http://alias:8000") + good, "", false},
		{"another machine", upstream("0.0.0.0:8081", "http://gpu-box:8081") + good, "", false},
		{"name that does not resolve", upstream("0.0.0.0:8081", "http://vllm:8081") + good, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rootless && os.Geteuid() == 0 {
				t.Skip("root writes to read-only directories")
			}
			cfg, err := Parse("x.yaml", []byte(tt.yaml), -1)
			if err != nil {
				t.Fatal(err)
			}
			before := tree(t, dir)
			problems := cfg.Preflight(context.Background(), hosts)
			if after := tree(t, dir); !slices.Equal(before, after) {
				t.Errorf("preflight left %v, had %v", after, before)
			}
			got := (&Error{Problems: problems}).Error()
			switch {
			case tt.want == "" && len(problems) > 0:
				t.Errorf("problems: %s", got)
			case tt.want != "" && (len(problems) != 1 || !strings.Contains(got, tt.want)):
				t.Errorf("problems: %s\nwant one with %q", got, tt.want)
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("a password in the clear: %s", got)
			}
		})
	}
}

// tree is every path under dir.
func tree(t *testing.T, dir string) []string {
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil && !errors.Is(err, os.ErrPermission) {
		t.Fatal(err)
	}
	return out
}
