package redact

import "testing"

func TestURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"http://127.0.0.1:8086", "http://127.0.0.1:8086"},
		{"https://user:secret@influx.example:8086/", "https://user:xxxxx@influx.example:8086/"},
		{"http://user@h", "http://user@h"},
		{"http://user:secret@h:port", "http://xxxxx@h:port"}, // does not parse
		{"user:secret@h:port%", "xxxxx@h:port%"},
		{"", ""},
	} {
		if got := URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
