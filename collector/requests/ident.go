package requests

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
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

// tenants names the client of a request without keeping its API key, nor
// anything a client sent that may be one.
type tenants struct {
	header string // configured tenant header, or ""
	// raw keeps a value a client chose (the header's, the event API's
	// tenant) as it is when it looks like a name; else it is hashed like
	// a key. An operator opts in (tenant_header_raw, event_tenant_raw)
	// when the value is a harmless team name: it may be a key in disguise.
	raw    bool
	secret []byte // per-node HMAC key
}

// of is the tenant of a request: the configured header's value when it has
// one (named), else the bearer key hashed, else "". A key is neither kept
// nor logged.
func (t tenants) of(h http.Header) string {
	if t.header != "" {
		if v := strings.TrimSpace(h.Get(t.header)); v != "" {
			return t.named(v)
		}
	}
	scheme, key, ok := strings.Cut(h.Get("Authorization"), " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return ""
	}
	return t.hash(key)
}

// named is the tenant of a value v a client chose: v itself when raw and
// it looks like a name (1 to maxTenant bytes of visible ASCII), else v
// hashed.
func (t tenants) named(v string) string {
	if t.raw && visible(v, maxTenant) {
		return v
	}
	return t.hash(v)
}

// hash is the first 16 hex digits of HMAC-SHA256(secret, v).
func (t tenants) hash(v string) string {
	mac := hmac.New(sha256.New, t.secret)
	mac.Write([]byte(v))
	return hex.EncodeToString(mac.Sum(nil)[:8])
}
