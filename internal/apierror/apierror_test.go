package apierror

import (
	"net/http/httptest"
	"testing"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-Id", "abc")
	Write(rec, 413, "proxy_error", `too "big"`)
	want := `{"error":{"message":"too \"big\"","type":"proxy_error","code":413}}`
	if rec.Code != 413 || rec.Body.String() != want {
		t.Errorf("got %d %s, want 413 %s", rec.Code, rec.Body, want)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Content-Length": "67", "X-Request-Id": "abc"} {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestWriteParam(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteParam(rec, 422, "invalid_request_error", "[1].start", "[1].start: in the future")
	want := `{"error":{"message":"[1].start: in the future","type":"invalid_request_error","param":"[1].start","code":422}}`
	if rec.Code != 422 || rec.Body.String() != want {
		t.Errorf("got %d %s, want 422 %s", rec.Code, rec.Body, want)
	}
}
