package admin

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadAdminToken(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		content, want, err string
	}{
		{"  0123456789abcdef0123\n", "0123456789abcdef0123", ""},
		{"short\n", "", "at least 16"},
		{"0123456789abcdef 0123", "", "one word"},
	} {
		path := filepath.Join(dir, "token")
		os.WriteFile(path, []byte(tt.content), 0o600)
		got, err := ReadToken(path)
		if string(got) != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%q: %q, %v; want %q, error with %q", tt.content, got, err, tt.want, tt.err)
		}
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file read as a token")
	}
}

func TestBearerAuth(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	h := bearerAuth([]byte("0123456789abcdef0123"), ok)
	for _, tt := range []struct {
		path, auth string
		want       int
	}{
		{"/v1/requests", "", 401},
		{"/v1/requests", "Bearer 0123456789abcdef012", 401},
		{"/v1/requests", "Basic 0123456789abcdef0123", 401},
		{"/v1/requests", "Bearer 0123456789abcdef0123", 204},
		{"/v1/requests", "bearer  0123456789abcdef0123 ", 204},
		{"/metrics", "", 401},
		{"/healthz", "", 204},
		{"/readyz", "", 204},
	} {
		req := httptest.NewRequest("GET", tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s %q: %d, want %d", tt.path, tt.auth, rec.Code, tt.want)
		}
		if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.path)
		}
	}
}
