// Package redact hides secrets in what the daemon logs and prints.
package redact

import (
	"net/url"
	"strings"
)

// URL is raw with the password of its userinfo (user:password@) replaced
// by "xxxxx", for log lines, messages and output. A URL that does not
// parse, or parses as opaque (no "//"), has everything between "//" (or
// the start) and its last '@' replaced instead.
func URL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Opaque == "" {
		return u.Redacted()
	}
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "//"); i >= 0 && i < at {
		start = i + 2
	}
	return raw[:start] + "xxxxx" + raw[at:]
}
