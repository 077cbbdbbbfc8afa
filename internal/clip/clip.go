// Package clip shortens text that clients chose (model names, service
// names, content types, error messages quoting them) for records, logs and
// answers: valid UTF-8, cut at a character's start.
package clip

import (
	"strings"
	"unicode/utf8"
)

// String is s with invalid UTF-8 replaced by U+FFFD, at most n bytes, cut
// before a character that would not fit.
func String(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
