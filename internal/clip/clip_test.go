package clip

import (
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc"},
		{"héllo", 2, "h"}, // é is two bytes: not cut in half
		{"a\xffb", 10, "a\uFFFDb"},
		{"", 0, ""},
	} {
		got := String(tt.in, tt.n)
		if got != tt.want || !utf8.ValidString(got) || len(got) > max(tt.n, len(tt.want)) {
			t.Errorf("String(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
