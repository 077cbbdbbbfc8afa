package requests

import (
	"net/http"
	"testing"
)

func TestTraceparent(t *testing.T) {
	h := http.Header{}
	h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if tc := traceOf(h); tc.id != "0af7651916cd43dd8448eb211c80319c" || tc.header != "" {
		t.Errorf("client's traceparent: %+v", tc)
	}
	tc := traceOf(http.Header{})
	if len(tc.id) != 32 || tc.header == "" {
		t.Fatalf("started trace: %+v", tc)
	}
	out := http.Header{}
	tc.set(out)
	if id, ok := parseTraceparent(out.Get("traceparent")); !ok || id != tc.id {
		t.Errorf("sent %q, want trace id %s", out.Get("traceparent"), tc.id)
	}
	if id, ok := parseTraceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"); !ok || id != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("a later version with more after it: %q %v", id, ok)
	}
	for _, bad := range []string{"00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "junk",
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01"} {
		h.Set("traceparent", bad)
		if tc := traceOf(h); tc.id != "" || tc.header != "" {
			t.Errorf("%q: %+v", bad, tc)
		}
	}
}
