package requests

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// nopRecorder is the cheapest Recorder.
type nopRecorder struct{}

func (nopRecorder) BeginSpan(estimator.Span) {}
func (nopRecorder) End(estimator.Span)       {}

// benchProxy measures requests through the proxy (or straight to the fake
// with direct) on loopback: go test -bench Proxy -cpuprofile cpu.out.
func benchProxy(b *testing.B, direct bool, body string) {
	fake := httptest.NewServer(fakeupstream.New(fakeupstream.Options{}))
	defer fake.Close()
	url := fake.URL
	if !direct {
		p, err := New(Options{Name: "bench", Target: fake.URL, TenantSecret: testSecret}, nopRecorder{})
		if err != nil {
			b.Fatal(err)
		}
		defer p.CloseIdleConnections()
		front := httptest.NewServer(p)
		defer front.Close()
		url = front.URL
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

const benchChat = `{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}`
const benchStream = `{"model":"bench","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}`

func BenchmarkDirectChat(b *testing.B)   { benchProxy(b, true, benchChat) }
func BenchmarkProxyChat(b *testing.B)    { benchProxy(b, false, benchChat) }
func BenchmarkDirectStream(b *testing.B) { benchProxy(b, true, benchStream) }
func BenchmarkProxyStream(b *testing.B)  { benchProxy(b, false, benchStream) }
