package otlp

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// statusOf decodes an error answer's google.rpc.Status.
func statusOf(t testing.TB, w *httptest.ResponseRecorder) *spb.Status {
	t.Helper()
	st := &spb.Status{}
	var err error
	if w.Header().Get("Content-Type") == contentJSON {
		err = protojson.Unmarshal(w.Body.Bytes(), st)
	} else {
		err = proto.Unmarshal(w.Body.Bytes(), st)
	}
	if err != nil {
		t.Fatalf("answer %d is not a Status: %v (%q)", w.Code, err, w.Body.String())
	}
	return st
}

func TestHTTPEncodings(t *testing.T) {
	td := build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("chatcmpl-1", 1), httpSpan(1)}})
	for _, tc := range []struct {
		name   string
		body   []byte
		header map[string]string
	}{
		{"protobuf", protoBody(t, td), nil},
		{"json", jsonBody(t, td), map[string]string{"Content-Type": "application/json; charset=utf-8"}},
		{"protobuf gzip", gzipped(protoBody(t, td)), map[string]string{"Content-Encoding": "gzip"}},
		{"json gzip", gzipped(jsonBody(t, td)), map[string]string{"Content-Type": contentJSON, "Content-Encoding": "gzip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec, _ := newReceiver(t, Options{})
			w := post(r, tc.body, tc.header)
			if w.Code != http.StatusOK {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if resp := exportResponse(t, w); resp.PartialSuccess().RejectedSpans() != 0 {
				t.Errorf("rejected %d", resp.PartialSuccess().RejectedSpans())
			}
			if got := rec.requests(); len(got) != 1 || got[0].ID != "1" || got[0].PromptTokens != 812 || !got[0].Scheduled.Equal(at(1.25)) {
				t.Errorf("%+v", got)
			}
		})
	}
}

func TestHTTPPartialSuccess(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{})
	bad := vllmSpan("", 1)
	delete(bad.attrs, "gen_ai.request.id")
	td := build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("ok", 1), bad, httpSpan(1)}},
		resourceSpec{service("other"), []spanSpec{vllmSpan("x", 1)}})
	for _, json := range []bool{false, true} {
		body, h := protoBody(t, td), map[string]string{}
		if json {
			body, h["Content-Type"] = jsonBody(t, td), contentJSON
		}
		w := post(r, body, h)
		if w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		ps := exportResponse(t, w).PartialSuccess()
		if ps.RejectedSpans() != 2 || !strings.Contains(ps.ErrorMessage(), "1 without a request id") ||
			!strings.Contains(ps.ErrorMessage(), "1 from a resource no source matches") {
			t.Errorf("json %v: partial success %d %q", json, ps.RejectedSpans(), ps.ErrorMessage())
		}
	}
	if len(rec.requests()) != 2 {
		t.Errorf("%d used, want 2", len(rec.requests()))
	}
}

func TestHTTPRefusals(t *testing.T) {
	good := protoBody(t, build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("a", 1)}}))
	// A gzip bomb: small compressed, past the cap decompressed.
	bomb := gzipped(bytes.Repeat([]byte{0}, 4096))
	for _, tc := range []struct {
		name    string
		opts    Options
		method  string
		path    string
		body    []byte
		header  map[string]string
		recErr  error
		status  int
		message string
	}{
		{name: "garbage protobuf", body: []byte("\xff\xff\xff not protobuf"), status: 400, message: "not an OTLP ExportTraceServiceRequest"},
		{name: "garbage json", body: []byte(`{"resourceSpans": [`), header: map[string]string{"Content-Type": contentJSON}, status: 400, message: "not an OTLP"},
		{name: "not gzip", body: good, header: map[string]string{"Content-Encoding": "gzip"}, status: 400, message: "not gzip"},
		{name: "truncated gzip", body: gzipped(good)[:20], header: map[string]string{"Content-Encoding": "gzip"}, status: 400, message: "cannot read the body"},
		{name: "too large", opts: Options{MaxBodyBytes: 64}, body: good, status: 413, message: "larger than 64 bytes"},
		{name: "too large inflated", opts: Options{MaxBodyBytes: 1024}, body: bomb, header: map[string]string{"Content-Encoding": "gzip"}, status: 413, message: "larger than 1024 bytes"},
		{name: "content type", body: good, header: map[string]string{"Content-Type": "text/plain"}, status: 415, message: `content type "text/plain"`},
		{name: "no content type", body: good, header: map[string]string{"Content-Type": ""}, status: 415, message: "content type"},
		{name: "encoding", body: good, header: map[string]string{"Content-Encoding": "br"}, status: 415, message: `content encoding "br"`},
		{name: "no token", opts: Options{Token: "s3cret"}, body: good, status: 401, message: "bearer token"},
		{name: "wrong token", opts: Options{Token: "s3cret"}, body: good, header: map[string]string{"Authorization": "Bearer s3cre"}, status: 401, message: "bearer token"},
		{name: "method", method: http.MethodGet, status: 405, message: "use POST"},
		{name: "full", body: good, recErr: &FullError{RetryAfter: 1500 * time.Millisecond, Reason: "span queue"}, status: 429, message: "full: span queue"},
		{name: "broken", body: good, recErr: errBroken, status: 503, message: "could not be recorded: broken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec, _ := newReceiver(t, tc.opts)
			rec.err = tc.recErr
			req := httptest.NewRequest(cmpOr(tc.method, http.MethodPost), cmpOr(tc.path, TracesPath), bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", contentProto)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			r.Handler().ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if st := statusOf(t, w); !strings.Contains(st.GetMessage(), tc.message) {
				t.Errorf("message %q, want %q", st.GetMessage(), tc.message)
			}
			switch tc.status {
			case 429:
				if ra := w.Header().Get("Retry-After"); ra != "2" {
					t.Errorf("Retry-After %q, want 2", ra)
				}
				if s := r.Stats(); s.Dropped != 1 || s.Used != 0 || s.Refused != 1 {
					t.Errorf("stats %+v", s)
				}
			case 401:
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate")
				}
			case 405:
				if w.Header().Get("Allow") != http.MethodPost {
					t.Error("no Allow")
				}
			}
			if tc.status != 429 && tc.status != 503 && len(rec.requests()) != 0 {
				t.Errorf("recorded %d", len(rec.requests()))
			}
		})
	}
}

func TestHTTPToken(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{Token: "s3cret"})
	body := protoBody(t, build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("a", 1)}}))
	if w := post(r, body, map[string]string{"Authorization": "Bearer s3cret"}); w.Code != 200 || len(rec.requests()) != 1 {
		t.Errorf("%d %s", w.Code, w.Body)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/metrics", bytes.NewReader(body))
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusNotFound {
		t.Errorf("/v1/metrics: %d", w.Code)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
