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

// parseTraceparent returns the trace id of a traceparent
// ("00-<32 hex>-<16 hex>-<2 hex>"), lower-case, not all zeros. Version 00
// is exactly 55 characters; a later version may add "-..." after them.
func parseTraceparent(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if len(v) < 55 || (len(v) > 55 && (v[:2] == "00" || v[55] != '-')) || v[:2] == "ff" {
		return "", false
	}
	zero := true
	for i := range 55 {
		c := v[i]
		switch i {
		case 2, 35, 52:
			if c != '-' {
				return "", false
			}
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
		if i > 2 && i < 35 && c != '0' {
			zero = false
		}
	}
	if zero {
		return "", false
	}
	return v[3:35], true
}
