package schema

import (
	"strings"
	"unicode/utf8"
)

// replacement stands in for what a tag or string field cannot carry: it is
// not ASCII, so a value that had one never equals a value a client could
// send through the proxy's tenant header or the event API (visible ASCII).
const replacement = "\uFFFD"

// TagValue makes s writable as a tag value whatever a client put in it:
// U+FFFD replaces invalid UTF-8, control characters, and a backslash at
// the end or before ',', '=', ' ' or '"' (which line protocol would read as
// an escape of the separator). Other values are returned as they are.
func TagValue(s string) string {
	if plainASCII(s) {
		return s
	}
	s = strings.ToValidUTF8(s, replacement)
	var b strings.Builder
	b.Grow(len(s) + 2*len(replacement))
	for i, r := range s {
		switch {
		case isControl(r):
			b.WriteString(replacement)
		case r == '\\' && (i == len(s)-1 || strings.IndexByte(keyNoBackslash, s[i+1]) >= 0):
			b.WriteString(replacement)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// StringValue makes s writable as a string field of at most max bytes:
// U+FFFD replaces invalid UTF-8 and control characters (tab excepted), and
// it is cut at a character boundary.
func StringValue(s string, max int) string {
	if len(s) <= max && plainASCII(s) {
		return s
	}
	s = strings.ToValidUTF8(s, replacement)
	s = strings.Map(func(r rune) rune {
		if r != '\t' && isControl(r) {
			return utf8.RuneError
		}
		return r
	}, s)
	if len(s) > max {
		for max > 0 && !utf8.RuneStart(s[max]) {
			max--
		}
		s = s[:max]
	}
	return s
}

// plainASCII: printable ASCII without a backslash, the values every
// encoder takes as they are.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}
