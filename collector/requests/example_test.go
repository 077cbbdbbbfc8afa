package requests_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// printer is the smallest Recorder: a real one queues and never blocks.
type printer struct{ done chan estimator.Span }

func (printer) BeginSpan(estimator.Span) {}
func (p printer) End(s estimator.Span)   { p.done <- s }

// A proxy in front of the fake upstream, as cmd/ wires one per configured
// upstream: the proxy is an http.Handler on the upstream's listen address.
func Example() {
	ctx := context.Background()
	fake, err := fakeupstream.Start(ctx, fakeupstream.Options{})
	if err != nil {
		panic(err)
	}
	defer fake.Close()

	rec := printer{done: make(chan estimator.Span, 1)}
	proxy, err := requests.New(requests.Options{
		Name:         "vllm-llama70b",
		Target:       fake.URL(),
		Devices:      []string{"0", "1", "2", "3"},
		TenantSecret: []byte("per-node secret, 16 bytes or more"),
	}, rec)
	if err != nil {
		panic(err)
	}
	defer proxy.CloseIdleConnections()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	res, err := client.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":4,"messages":[{"role":"user","content":"hello world!"}]}`))
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()

	s := <-rec.done
	fmt.Println(s.Upstream, s.Model, s.Status, s.Devices, s.Served)
	fmt.Println("tokens:", s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.UsageSource)
	fmt.Println("streamed:", !s.FirstToken.IsZero(), "same id:", s.ID == res.Header.Get("X-Request-Id"))
	// Output:
	// vllm-llama70b m 200 [0 1 2 3] true
	// tokens: 6 4 3 reported
	// streamed: true same id: true
}
