package otlp

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TracesPath is the OTLP/HTTP path of traces.
const TracesPath = "/v1/traces"

// Content types of OTLP/HTTP.
const (
	contentProto = "application/x-protobuf"
	contentJSON  = "application/json"
)

// Handler serves OTLP/HTTP: POST /v1/traces with a protobuf or JSON
// ExportTraceServiceRequest, gzip-compressed or not. The answer follows
// the OTLP specification: 200 with an ExportTraceServiceResponse (its
// partial_success counting the inference spans that could not be used),
// or an error status with a google.rpc.Status whose message says what is
// wrong, in the request's encoding: 400 (the body does not decode), 401
// (no or a wrong bearer token), 404, 405, 413 (larger than
// MaxBodyBytes), 415 (another content type or encoding), 429 with
// Retry-After (the recorder is full), 503 (the recorder failed).
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(TracesPath, r.serveTraces)
	return mux
}

func (r *Receiver) serveTraces(w http.ResponseWriter, req *http.Request) {
	json := false
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err == nil {
		json = mt == contentJSON
	}
	// fail answers an error. The log line has the status alone: a
	// decoder's message may quote the body, which may hold prompt text
	// (the answer goes back to its sender, who has it anyway).
	fail := func(status int, code codes.Code, format string, args ...any) {
		r.stats.refused.Add(1)
		r.opts.Logger.Debug("otlp: export refused", "status", status)
		writeStatus(w, json, status, code, fmt.Sprintf(format, args...))
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, codes.Unimplemented, "use POST")
		return
	}
	if !r.authorized(req.Header.Values("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="otlp"`)
		fail(http.StatusUnauthorized, codes.Unauthenticated, "a bearer token is required (Authorization: Bearer ...)")
		return
	}
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if mt != contentProto && mt != contentJSON {
		fail(http.StatusUnsupportedMediaType, codes.InvalidArgument, "content type %q is not supported: use %s or %s", truncate(mt, 64), contentProto, contentJSON)
		return
	}
	limit := r.opts.MaxBodyBytes
	var body io.Reader = http.MaxBytesReader(w, req.Body, limit)
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			if tooLarge(err) {
				fail(http.StatusRequestEntityTooLarge, codes.InvalidArgument, "the body is larger than %d bytes", limit)
				return
			}
			fail(http.StatusBadRequest, codes.InvalidArgument, "the body is not gzip: %v", err)
			return
		}
		defer zr.Close()
		body = zr
	default:
		fail(http.StatusUnsupportedMediaType, codes.InvalidArgument, "content encoding %q is not supported: use gzip or none", truncate(enc, 64))
		return
	}
	// Decompressed too, the body may hold at most limit bytes.
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	switch {
	case tooLarge(err) || int64(len(data)) > limit:
		fail(http.StatusRequestEntityTooLarge, codes.InvalidArgument, "the body is larger than %d bytes", limit)
		return
	case err != nil:
		fail(http.StatusBadRequest, codes.InvalidArgument, "cannot read the body: %v", err)
		return
	}
	er := ptraceotlp.NewExportRequest()
	if json {
		err = er.UnmarshalJSON(data)
	} else {
		err = er.UnmarshalProto(data)
	}
	if err != nil {
		fail(http.StatusBadRequest, codes.InvalidArgument, "the body is not an OTLP ExportTraceServiceRequest in %s: %s", mt, truncate(err.Error(), 200))
		return
	}
	out := r.export(er.Traces())
	if out.err != nil {
		if full, ok := errors.AsType[*FullError](out.err); ok {
			w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(full.RetryAfter)))
			fail(http.StatusTooManyRequests, codes.Unavailable, "%s: retry later", full.Error())
			return
		}
		fail(http.StatusServiceUnavailable, codes.Unavailable, "the spans could not be recorded: %v", out.err)
		return
	}
	r.stats.exports.Add(1)
	resp := out.response()
	var b []byte
	if json {
		b, err = resp.MarshalJSON()
	} else {
		b, err = resp.MarshalProto()
	}
	if err != nil { // cannot happen: a response of two fields
		writeStatus(w, json, http.StatusInternalServerError, codes.Internal, "cannot encode the response")
		return
	}
	writeBody(w, json, http.StatusOK, b)
}

func tooLarge(err error) bool {
	_, ok := errors.AsType[*http.MaxBytesError](err)
	return ok
}

// retrySeconds is a Retry-After in whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	if d <= 0 {
		d = DefaultRetryAfter
	}
	return int(max(1, math.Ceil(d.Seconds())))
}

// writeStatus answers with a google.rpc.Status, as OTLP/HTTP wants for
// every error.
func writeStatus(w http.ResponseWriter, json bool, status int, code codes.Code, msg string) {
	// Protobuf strings are UTF-8: a message quoting a bad body may not be.
	st := &spb.Status{Code: int32(code), Message: strings.ToValidUTF8(msg, "\uFFFD")}
	var b []byte
	if json {
		b, _ = protojson.Marshal(st) // cannot fail: a code and a string
	} else {
		b, _ = proto.Marshal(st)
	}
	writeBody(w, json, status, b)
}

func writeBody(w http.ResponseWriter, json bool, status int, b []byte) {
	h := w.Header()
	if json {
		h.Set("Content-Type", contentJSON)
	} else {
		h.Set("Content-Type", contentProto)
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
