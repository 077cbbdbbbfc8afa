package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPermissionWarnings: a token file others can read (0644) and a spool
// directory others can enter (0755) are each a warning naming the key and
// the chmod; 0600 and 0700 pass, and so do paths that do not exist yet.
func TestPermissionWarnings(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	spool := filepath.Join(dir, "spool")
	if err := os.WriteFile(token, []byte("0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	c := Default()
	c.Admin.TokenFile, c.Spool.Dir = token, spool
	c.Influx.TokenFile = filepath.Join(dir, "absent")
	if w := c.PermissionWarnings(); len(w) != 0 {
		t.Fatalf("0600 token, 0700 spool: warnings %q, want none", w)
	}
	os.Chmod(token, 0o644)
	os.Chmod(spool, 0o755)
	w := c.PermissionWarnings()
	if len(w) != 2 {
		t.Fatalf("0644 token, 0755 spool: warnings %q, want 2", w)
	}
	if !strings.Contains(w[0], "admin.token_file") || !strings.Contains(w[0], "0644") || !strings.Contains(w[0], "chmod 600") {
		t.Errorf("token warning %q", w[0])
	}
	if !strings.Contains(w[1], "spool.dir") || !strings.Contains(w[1], "0755") || !strings.Contains(w[1], "chmod 700") {
		t.Errorf("spool warning %q", w[1])
	}
}
