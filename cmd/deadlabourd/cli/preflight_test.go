package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deadlabour/deadlabour/daemon"
)

// exampleConfig is config/example.yaml with its spool in a temporary
// directory: check-config checks that the spool is writable, and not
// every test runs as root.
func exampleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "dir: /var/lib/deadlabour/spool", "dir: "+filepath.Join(t.TempDir(), "spool"), 1)
	path := filepath.Join(t.TempDir(), "example.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loopbackAlias is a name this machine resolves to a loopback address
// that is not the word localhost (an /etc/hosts alias), or "".
func loopbackAlias() string {
	host, _ := os.Hostname()
	for _, name := range []string{host, "localhost.localdomain", "ip6-localhost", "ip6-loopback"} {
		if name == "" {
			continue
		}
		addrs, err := net.DefaultResolver.LookupIPAddr(context.Background(), name)
		if err == nil && len(addrs) > 0 && addrs[0].IP.IsLoopback() {
			return name
		}
	}
	return ""
}

// TestCheckConfigAgreesWithRun: for each file run refuses at start,
// check-config fails too, on the same key; for a good one both accept. No
// password of a target is ever printed.
func TestCheckConfigAgreesWithRun(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	port := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		return p
	}
	p1, p2 := port(), port()
	token5, token := write("token5", "12345\n"), write("token", "0123456789abcdef0123\n")
	secret6 := write("secret6", "123456")
	file := write("file", "x")
	spool := filepath.Join(dir, "spool")
	base := func(listen, target string) string {
		return "gpu:\n  enabled: false\nupstreams:\n  - name: a\n    listen: " + listen + "\n    target: " + target + "\n" +
			"influx:\n  url: \"\"\n"
	}
	const pw = "hunter2"
	good := base("127.0.0.1:"+p1, "http://u:"+pw+"@127.0.0.1:9") + "spool:\n  dir: " + spool + "\n"
	cases := []struct{ name, yaml, key string }{
		{"good", good + "admin:\n  listen: 127.0.0.1:" + p2 + "\n", ""},
		{"upstream on the admin port", good + "admin:\n  listen: 127.0.0.1:" + p1 + "\n", "admin.listen"},
		{"loopback and wildcard on one port", good + "admin:\n  listen: 127.0.0.1:" + p2 + "\n  metrics_listen: 0.0.0.0:" + p1 + "\n", "admin.metrics_listen"},
		{"spool under a file", base("127.0.0.1:"+p1, "http://127.0.0.1:9") + "spool:\n  dir: " + file + "/spool\n", "spool.dir"},
		{"spool in /proc", base("127.0.0.1:"+p1, "http://127.0.0.1:9") + "spool:\n  dir: /proc/deadlabour\n", "spool.dir"},
		{"admin token missing", good + "admin:\n  listen: 127.0.0.1:" + p2 + "\n  token_file: " + dir + "/none\n", "admin.token_file"},
		{"admin token of 5 bytes", good + "admin:\n  listen: 127.0.0.1:" + p2 + "\n  token_file: " + token5 + "\n", "admin.token_file"},
		{"tenant secret of 6 bytes", good + "attribution:\n  tenant_secret_file: " + secret6 + "\n", "attribution.tenant_secret_file"},
		{"admin beyond loopback without a token", good + "admin:\n  listen: 0.0.0.0:" + p2 + "\n", "admin.listen"},
		{"admin beyond loopback with a token", good + "admin:\n  listen: 0.0.0.0:" + p2 + "\n  token_file: " + token + "\n", ""},
		{"self-loop through localhost", base("127.0.0.1:"+p1, "http://u:"+pw+"@localhost:"+p1) + "spool:\n  dir: " + spool + "\n", "upstreams[0].target"},
	}
	if alias := loopbackAlias(); alias != "" {
		cases = append(cases, struct{ name, yaml, key string }{"self-loop through an alias of loopback",
			base("127.0.0.1:"+p1, "http://u:"+pw+"@"+alias+":"+p1) + "spool:\n  dir: " + spool + "\n", "upstreams[0].target"})
	} else {
		t.Log("no /etc/hosts alias of loopback here: config.TestPreflight covers it with a fake resolver")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := write("c.yaml", tc.yaml)
			var out, errb bytes.Buffer
			code := Run(context.Background(), []string{"check-config", "--gpus", "0", path}, &out, &errb)
			runErr := startDaemon(t, path)
			if tc.key == "" {
				if code != 0 || runErr != nil {
					t.Fatalf("check-config exit %d, run: %v\n%s%s", code, runErr, out.String(), errb.String())
				}
			} else {
				if code != 1 || !strings.Contains(out.String(), tc.key+": ") {
					t.Errorf("check-config: exit %d, want 1 naming %s\n%s%s", code, tc.key, out.String(), errb.String())
				}
				if runErr == nil || !strings.Contains(runErr.Error(), tc.key+": ") {
					t.Errorf("run: %v, want a refusal naming %s", runErr, tc.key)
				}
			}
			if all := out.String() + errb.String() + errString(runErr); strings.Contains(all, pw) {
				t.Errorf("a password in the clear:\n%s", all)
			}
		})
	}
}

// startDaemon does what run does up to serving: load the file, build the
// daemon (every listener open), and stops it at once.
func startDaemon(t *testing.T, path string) error {
	cfg, err := loadConfig(path, -1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	cancel()
	if err != nil {
		return err
	}
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("run: %v", err)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
