package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deadlabour/deadlabour/config"
)

// makeInstall runs `make install` into a fresh DESTDIR.
func makeInstall(t *testing.T, dest string, vars ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	args := append([]string{"-C", "..", "install", "DESTDIR=" + dest}, vars...)
	out, err := exec.Command("make", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// make install honours PREFIX and DESTDIR, installs a config that validates
// and reads the token from the unit's credential, and never overwrites the
// config or the token on a second run (an upgrade).
func TestMakeInstall(t *testing.T) {
	for _, c := range []struct {
		name   string
		vars   []string
		bindir string
		unit   string
		users  string
	}{
		{"default", nil, "/usr/local/bin", "/usr/local/lib/systemd/system", "/usr/local/lib/sysusers.d"},
		{"prefix=/usr", []string{"PREFIX=/usr"}, "/usr/bin", "/usr/lib/systemd/system", "/usr/lib/sysusers.d"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dest := t.TempDir()
			makeInstall(t, dest, c.vars...)
			bin := filepath.Join(dest, c.bindir, "deadlabourd")
			unitPath := filepath.Join(dest, c.unit, "deadlabourd.service")
			cfgPath := filepath.Join(dest, "etc/deadlabour/config.yaml")
			token := filepath.Join(dest, "etc/deadlabour/influx-token")
			for path, want := range map[string]os.FileMode{
				bin:      0o755,
				unitPath: 0o644,
				filepath.Join(dest, c.users, "deadlabour.conf"):                  0o644,
				filepath.Join(dest, "etc/udev/rules.d/70-deadlabour-rapl.rules"): 0o644,
				cfgPath: 0o644,
				token:   0o600,
				filepath.Join(dest, "var/lib/deadlabour"): os.ModeDir | 0o750,
			} {
				if got := mode(t, path); got != want {
					t.Errorf("%s: mode %v, want %v", strings.TrimPrefix(path, dest), got, want)
				}
			}

			unit, err := os.ReadFile(unitPath)
			if err != nil {
				t.Fatal(err)
			}
			if want := "ExecStart=" + c.bindir + "/deadlabourd run --config /etc/deadlabour/config.yaml\n"; !strings.Contains(string(unit), want) {
				t.Errorf("installed unit lacks %q", want)
			}
			cfg, err := config.Load(cfgPath, 8)
			if err != nil {
				t.Fatalf("installed config: %v", err)
			}
			host, _ := os.Hostname()
			if cfg.Influx.TokenFile != "/run/credentials/deadlabourd.service/influx-token" || cfg.Influx.TokenEnv != "" ||
				cfg.Node != host || cfg.Spool.Dir != "/var/lib/deadlabour/spool" {
				t.Errorf("installed config: token_file %q, token_env %q, node %q, spool %q: want the unit's credential, no env, the hostname, the state directory",
					cfg.Influx.TokenFile, cfg.Influx.TokenEnv, cfg.Node, cfg.Spool.Dir)
			}
			// The installed binary runs and accepts the installed config.
			// Not as root, the spool under /var/lib may not be writable
			// (check-config checks as its user): that problem alone is
			// expected.
			out, err := exec.Command(bin, "check-config", "--gpus", "8", cfgPath).CombinedOutput()
			if os.Geteuid() != 0 && strings.Count(string(out), "spool.dir: ") == 1 && strings.Contains(string(out), ": 1 problem(s)") {
				err, out = nil, []byte(": ok: ")
			}
			if err != nil || !strings.Contains(string(out), ": ok: ") {
				t.Errorf("installed deadlabourd check-config: %v\n%s", err, out)
			}

			// An upgrade keeps the admin's config and token.
			os.WriteFile(cfgPath, []byte("# edited\n"), 0o644)
			os.WriteFile(token, []byte("user:secret\n"), 0o600)
			msg := makeInstall(t, dest, c.vars...)
			if b, _ := os.ReadFile(cfgPath); string(b) != "# edited\n" || !strings.Contains(msg, "kept ") {
				t.Errorf("a second make install replaced the config (now %q)", b)
			}
			if b, _ := os.ReadFile(token); string(b) != "user:secret\n" {
				t.Errorf("a second make install replaced the token (now %q)", b)
			}

			if sd, err := exec.LookPath("systemd-analyze"); err == nil {
				// verify checks that ExecStart exists: point it at the DESTDIR copy.
				staged := filepath.Join(t.TempDir(), "deadlabourd.service")
				os.WriteFile(staged, []byte(strings.Replace(string(unit), "ExecStart="+c.bindir, "ExecStart="+filepath.Join(dest, c.bindir), 1)), 0o644)
				if out, err := exec.Command(sd, "verify", "--man=no", staged).CombinedOutput(); err != nil || len(out) > 0 {
					t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
				}
			}
		})
	}
}

// The sysusers file creates the deadlabour user and group the unit runs as.
func TestSysusersCreatesTheUser(t *testing.T) {
	bin, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers is not installed (apt-get install systemd; .ci/run does)")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	conf, err := filepath.Abs("../systemd/sysusers.conf")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc/group"))
	if !strings.Contains(string(passwd), "deadlabour:x:") || !strings.Contains(string(passwd), ":/var/lib/deadlabour:/usr/sbin/nologin") ||
		!strings.Contains(string(group), "deadlabour:x:") {
		t.Errorf("no deadlabour user and group:\n%s\n%s", passwd, group)
	}
}
