package influxtest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerWriteQueryRestart(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q, want http://127.0.0.1:PORT", s.URL())
	}
	if got, want := s.Bucket(), "deadlabour/autogen"; got != want {
		t.Errorf("Bucket() = %q, want %q", got, want)
	}
	s.Write(t, "m,host=a f=0.1,i=3i,s=\"x y\",b=true 1000000000000000001\n"+
		"m,host=b f=2 1000000000000000002\n")

	rows := s.Rows(t, `SELECT * FROM m WHERE host = 'a'`)
	if len(rows) != 1 {
		t.Fatalf("rows = %v, want 1 row", rows)
	}
	r := rows[0]
	if got, ok := r.Time(); !ok || got.UnixNano() != 1000000000000000001 {
		t.Errorf("time = %v, %v; want 1000000000000000001 ns", got.UnixNano(), ok)
	}
	if got, ok := r.Float("f"); !ok || got != 0.1 {
		t.Errorf("f = %v, %v; want 0.1", got, ok)
	}
	if got, ok := r.Int("i"); !ok || got != 3 {
		t.Errorf("i = %v, %v; want 3", got, ok)
	}
	if got, ok := r.String("s"); !ok || got != "x y" {
		t.Errorf("s = %q, %v; want \"x y\"", got, ok)
	}
	if got, ok := r.Bool("b"); !ok || !got {
		t.Errorf("b = %v, %v; want true", got, ok)
	}
	if got, ok := r.String("host"); !ok || got != "a" {
		t.Errorf("host = %q, %v; want a", got, ok)
	}
	// Host b has no field i: the row must not carry it.
	if rows := s.Rows(t, `SELECT * FROM m WHERE host = 'b'`); len(rows) != 1 || rows[0]["i"] != nil {
		t.Errorf("host b rows = %v, want one row without i", rows)
	}
	if got := s.Count(t, "m", ""); got != 2 {
		t.Errorf("Count(m) = %d, want 2", got)
	}

	url := s.URL()
	s.Stop(t)
	if resp, err := http.Get(url + "/ping"); err == nil {
		resp.Body.Close()
		t.Fatalf("/ping after Stop answered %s, want a refused connection", resp.Status)
	}
	s.Stop(t) // stopping twice is harmless

	s.Restart(t)
	if s.URL() != url {
		t.Errorf("URL after Restart = %q, want %q", s.URL(), url)
	}
	s.WaitCount(t, "m", "", 2, 5*time.Second)
	s.Restart(t) // bouncing a running server works too
	if got := s.Count(t, "m", "host = "+QuoteString("b")); got != 1 {
		t.Errorf("Count(m, host b) after bounce = %d, want 1", got)
	}
}

func TestQueryError(t *testing.T) {
	s := Start(t)
	for _, q := range []string{"SELEKT 1", "SELECT * FROM nothing WHERE time > 'not a time'"} {
		if _, err := s.query(q); err == nil {
			t.Errorf("query(%q) = nil error, want one", q)
		}
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/influxd")
	_, err := binary()
	if err == nil || !strings.Contains(err.Error(), EnvBinary) {
		t.Errorf("binary() error = %v, want one naming %s", err, EnvBinary)
	}
}

func TestQuote(t *testing.T) {
	tests := []struct {
		in, ident, str string
	}{
		{`plain`, `"plain"`, `'plain'`},
		{`a"b`, `"a\"b"`, `'a"b'`},
		{`a'b`, `"a'b"`, `'a\'b'`},
		{`a\b`, `"a\\b"`, `'a\\b'`},
	}
	for _, tt := range tests {
		if got := QuoteIdent(tt.in); got != tt.ident {
			t.Errorf("QuoteIdent(%q) = %q, want %q", tt.in, got, tt.ident)
		}
		if got := QuoteString(tt.in); got != tt.str {
			t.Errorf("QuoteString(%q) = %q, want %q", tt.in, got, tt.str)
		}
	}
}

// With Auth the server refuses anonymous writes and the harness's own
// calls still work with the admin user.
func TestServerAuth(t *testing.T) {
	s := StartWith(t, Options{Auth: true})
	if s.Token() != AdminUser+":"+AdminPassword {
		t.Errorf("Token() = %q", s.Token())
	}
	s.Write(t, "m f=1 1000000000000000001\n")
	if n := s.Count(t, "m", ""); n != 1 {
		t.Errorf("%d points, want 1", n)
	}
	resp, err := http.Post(s.URL()+"/write?db="+Database, "text/plain", strings.NewReader("m f=2 1000000000000000002\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous write: %s, want 401", resp.Status)
	}
	if got := Start(t).Token(); got != "" {
		t.Errorf("Token() without auth = %q, want empty", got)
	}
}
