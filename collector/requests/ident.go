package requests

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"unicode/utf8"
)

const (
	requestIDHeader = "X-Request-Id"
	maxRequestID    = 128 // bytes of a client's request id that are kept
	maxTenant       = 64  // bytes of a tenant header value
	maxModel        = 256 // bytes of a model name
)

// requestID keeps the client's request id when it is a sane one (visible
// ASCII, at most maxRequestID bytes: it goes into logs and records), and
// otherwise makes a random 128-bit one in hex.
func requestID(client string) string {
	if visible(client, maxRequestID) {
		return client
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go >= 1.24)
	return hex.EncodeToString(b[:])
}

// visible reports whether s is 1 to max bytes of visible ASCII.
func visible(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// tenants names the client of a request without keeping its API key.
type tenants struct {
	header string // configured tenant header, or ""
	secret []byte // per-node HMAC key
}

// of is the tenant of a request: the configured header's value when there
// is a sane one, else the first 16 hex digits of HMAC-SHA256(secret, bearer
// key), else "". The key itself is neither kept nor logged.
func (t tenants) of(h http.Header) string {
	if t.header != "" {
		if v := strings.TrimSpace(h.Get(t.header)); visible(v, maxTenant) {
			return v
		}
	}
	scheme, key, ok := strings.Cut(h.Get("Authorization"), " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return ""
	}
	mac := hmac.New(sha256.New, t.secret)
	mac.Write([]byte(key))
	return hex.EncodeToString(mac.Sum(nil)[:8])
}

// clip cuts s to at most n bytes without splitting a UTF-8 character, and
// replaces invalid UTF-8.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
