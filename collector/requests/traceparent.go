package requests

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// traceparentHeader is the W3C Trace Context header.
const traceparentHeader = "Traceparent"

// traceContext is the W3C trace a request belongs to: the client's
// traceparent when it sent a valid one, else one the proxy starts (sampled)
// and sends to the upstream, so that the server's trace of the request can
// be matched with the proxy's record by trace id (engine/merge.go).
type traceContext struct {
	id     string // the trace id, 32 lower-case hex digits
	header string // the traceparent to add; "" when the client sent one
}

// traceOf reads a request's traceparent, or starts a trace.
func traceOf(h http.Header) traceContext {
	if v := h.Get(traceparentHeader); v != "" {
		if id, ok := parseTraceparent(v); ok {
			return traceContext{id: id}
		}
		return traceContext{} // not ours to replace: passed on as sent
	}
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go >= 1.24)
	id := hex.EncodeToString(b[:16])
	return traceContext{id: id, header: "00-" + id + "-" + hex.EncodeToString(b[16:]) + "-01"}
}

// set adds the traceparent the proxy started, if any.
func (t traceContext) set(h http.Header) {
	if t.header != "" {
		h.Set(traceparentHeader, t.header)
	}
}

// parseTraceparent returns the trace id of a version-00 traceparent
// ("00-<32 hex>-<16 hex>-<2 hex>"), lower-case, not all zeros.
func parseTraceparent(v string) (string, bool) {
	parts := strings.Split(strings.TrimSpace(v), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", false
	}
	for _, p := range parts[:4] {
		if _, err := hex.DecodeString(p); err != nil || strings.ToLower(p) != p {
			return "", false
		}
	}
	if parts[1] == strings.Repeat("0", 32) || parts[0] == "ff" {
		return "", false
	}
	return parts[1], true
}
