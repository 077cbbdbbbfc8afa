package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// PermissionWarnings names every secret file the configuration points at
// (admin.token_file, influx.token_file, attribution.tenant_secret_file, the
// spool's tenant.key) that others than its owner may read, and a spool
// directory that others may enter: each a sentence with the chmod that
// fixes it. Files and directories that do not exist yet pass (the daemon
// creates them 0600 and 0700). The daemon logs them at start; check-config
// prints them.
func (c *Config) PermissionWarnings() []string {
	var out []string
	secret := func(key, path string) {
		if path == "" {
			return
		}
		fi, err := os.Stat(path)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s %s is mode %04o: others than its owner can read the secret in it; chmod 600 %s",
			key, path, fi.Mode().Perm(), path))
	}
	secret("admin.token_file", c.Admin.TokenFile)
	secret("influx.token_file", c.Influx.TokenFile)
	secret("attribution.tenant_secret_file", c.Attribution.TenantSecretFile)
	if c.Spool.Dir != "" {
		if c.Attribution.TenantSecretFile == "" {
			secret("spool.dir's tenant key", filepath.Join(c.Spool.Dir, "tenant.key"))
		}
		if fi, err := os.Stat(c.Spool.Dir); err == nil && fi.IsDir() && fi.Mode().Perm()&0o077 != 0 {
			out = append(out, fmt.Sprintf("spool.dir %s is mode %04o: others than its owner can read the records waiting in it; chmod 700 %s",
				c.Spool.Dir, fi.Mode().Perm(), c.Spool.Dir))
		}
	}
	return out
}
