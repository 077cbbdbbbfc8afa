// Command deadlabour-bench drives the metering proxy benchmark
// (scripts/bench-proxy.sh): it serves the fake upstream, and measures a
// target (the fake itself, nginx, or deadlabourd in front of it) with an
// open-loop load at a fixed rate, with paced streams, or with streams held
// open. It prints one JSON object per measurement.
//
//	deadlabour-bench serve  -listen 127.0.0.1:18000
//	deadlabour-bench plain  -listen 127.0.0.1:18070 -target http://127.0.0.1:18000
//	deadlabour-bench rate   -targets direct=http://127.0.0.1:18000,proxy=http://127.0.0.1:18080 -rps 500 -duration 20s
//	deadlabour-bench stream -listen 127.0.0.1:18001 -targets direct=http://127.0.0.1:18001,proxy=http://127.0.0.1:18081
//	deadlabour-bench hold   -listen 127.0.0.1:18001 -target http://127.0.0.1:18081 -streams 500 -hold 5s
//	deadlabour-bench report < results.jsonl
//
// rate sends request i at start + i/rps whatever the answers before it
// (no coordinated omission: a slow answer cannot slow the load down), and
// times each from when it was due to when its body was read. rate and
// stream measure their targets in turns (slices, rounds), so that a change
// in the load of a shared machine falls on all of them alike. stream and
// hold serve the fake in-process on -listen, which the target must proxy
// to: stream then times every event from the fake's flush to the client's
// read on one clock. plain is the floor of any proxy written on Go's
// net/http: httputil.ReverseProxy with upstream keep-alive and nothing else.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/internal/cmdmain"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

const chatBody = `{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: deadlabour-bench serve|rate|stream|hold [flags]")
		os.Exit(2)
	}
	cmdmain.Run("deadlabour-bench", func(ctx context.Context, args []string, out io.Writer) error {
		switch args[0] {
		case "serve":
			return serve(ctx, args[1:])
		case "plain":
			return plain(ctx, args[1:])
		case "rate":
			return rate(ctx, args[1:])
		case "stream":
			return streams(ctx, args[1:])
		case "hold":
			return hold(ctx, args[1:])
		case "report":
			return report(os.Stdin, out)
		default:
			return fmt.Errorf("unknown command %q", args[0])
		}
	})
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18000", "address")
	fs.Parse(args)
	fake, err := fakeupstream.StartOn(ctx, *listen, fakeupstream.Options{})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return fake.Close()
}

// plain serves a bare httputil.ReverseProxy to target: what deadlabourd's
// proxy costs before it meters anything.
func plain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("plain", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18070", "address")
	target := fs.String("target", "http://127.0.0.1:18000", "upstream")
	fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		Transport: newClient(256).Transport,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: rp}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startFake starts the in-process fake on listen and a client that keeps
// up to conns connections; stop closes the client's idle connections, then
// the fake.
func startFake(ctx context.Context, listen string, opts fakeupstream.Options, conns int) (client *http.Client, stop func(), err error) {
	fake, err := fakeupstream.StartOn(ctx, listen, opts)
	if err != nil {
		return nil, nil, err
	}
	client = newClient(conns)
	return client, func() { client.CloseIdleConnections(); fake.Close() }, nil
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0,
		DisableCompression: true, IdleConnTimeout: time.Minute}}
}

// result is one measurement, printed as JSON.
type result struct {
	Kind     string             `json:"kind"`
	Target   string             `json:"target"`
	Count    int                `json:"count"`
	Errors   int                `json:"errors"`
	Seconds  float64            `json:"seconds"`
	RPS      float64            `json:"rps,omitempty"`
	Percents map[string]float64 `json:"ms"`
}

func percentiles(ds []time.Duration) map[string]float64 {
	if len(ds) == 0 {
		return nil
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q * float64(len(ds)-1))
		return float64(ds[i]) / 1e6
	}
	return map[string]float64{"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999), "max": at(1)}
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// targets parses "name=url,name=url".
func targets(spec string) ([][2]string, error) {
	var out [][2]string
	for _, t := range strings.Split(spec, ",") {
		name, url, ok := strings.Cut(t, "=")
		if !ok || name == "" || url == "" {
			return nil, fmt.Errorf("target %q: want name=url", t)
		}
		out = append(out, [2]string{name, url})
	}
	return out, nil
}

// named is a result with the target's name, as the report reads it.
type named struct {
	Name string `json:"name"`
	result
}

func rate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rate", flag.ExitOnError)
	spec := fs.String("targets", "", "name=url,... measured in turn, slice by slice")
	rps := fs.Float64("rps", 500, "requests per second")
	dur := fs.Duration("duration", 20*time.Second, "how long each target is measured, in all")
	slice := fs.Duration("slice", 2*time.Second, "how long each turn lasts")
	path := fs.String("path", "/v1/chat/completions", "path")
	body := fs.String("body", chatBody, "request body")
	fs.Parse(args)
	tgts, err := targets(*spec)
	if err != nil {
		return err
	}
	client := newClient(512)
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	lat := make([][]time.Duration, len(tgts))
	errs := make([]int, len(tgts))
	var wg sync.WaitGroup
	one := func(t int, due time.Time, count bool) {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, "POST", tgts[t][1]+*path, strings.NewReader(*body))
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err == nil && res.StatusCode != 200 {
				err = fmt.Errorf("status %d", res.StatusCode)
			}
		}
		d := time.Since(due)
		if !count {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs[t]++
			return
		}
		lat[t] = append(lat[t], d)
	}
	interval := time.Duration(float64(time.Second) / *rps)
	perSlice := int(*slice / interval)
	// Round 0 warms every target up and is not counted.
	for round := 0; round <= int(*dur / *slice) && ctx.Err() == nil; round++ {
		for t := range tgts {
			start := time.Now()
			for i := 0; i < perSlice && ctx.Err() == nil; i++ {
				due := start.Add(time.Duration(i) * interval)
				if w := time.Until(due); w > 0 {
					time.Sleep(w)
				}
				wg.Add(1)
				go one(t, due, round > 0)
			}
			wg.Wait() // the next target starts on an idle machine
		}
	}
	for t := range tgts {
		printJSON(named{tgts[t][0], result{Kind: "rate", Target: tgts[t][1], Count: len(lat[t]), Errors: errs[t],
			Seconds: dur.Seconds(), RPS: float64(len(lat[t])) / dur.Seconds(), Percents: percentiles(lat[t])}})
	}
	return nil
}

// line is one line of the script's results file: a measurement of a name
// (direct, nginx, deadlabourd), or a figure the script took itself.
type line struct {
	Name     string             `json:"name"`
	Kind     string             `json:"kind"`
	RPS      float64            `json:"rps"`
	CPU      float64            `json:"cpu_us_per_request"`
	Errors   int                `json:"errors"`
	Count    int                `json:"count"`
	Percents map[string]float64 `json:"ms"`
	Bytes    float64            `json:"bytes_per_stream"`
	Streams  int                `json:"streams"`
}

// report prints the results file as the table of docs/benchmarks.md, with
// each figure against its target.
func report(in io.Reader, out io.Writer) error {
	got := map[string]line{} // kind/name
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Name == "" {
			continue
		}
		got[l.Kind+"/"+l.Name] = l
	}
	if err := sc.Err(); err != nil {
		return err
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	p := func(kind, name, q string) float64 { return got[kind+"/"+name].Percents[q] }
	fmt.Fprintf(out, "| measure | direct | nginx | deadlabourd | deadlabourd vs target |\n|---|---|---|---|---|\n")
	thr := func(name string) float64 { return got["throughput/"+name].RPS }
	if n, d := thr("nginx"), thr("deadlabourd"); n > 0 && d > 0 {
		fmt.Fprintf(out, "| throughput, req/s (wrk, 64 conns) | %.0f | %.0f | %.0f | %.2f× nginx (target ≥ 1.0×): %s |\n",
			thr("direct"), n, d, d/n, verdict(d/n >= 1.0))
	}
	if n, g := thr("nginx"), thr("go-httputil"); n > 0 && g > 0 {
		fmt.Fprintf(out, "| throughput of a bare Go httputil.ReverseProxy (no metering), req/s | | | %.0f | %.2f× nginx: the floor of a net/http proxy |\n", g, g/n)
	}
	cpu := func(name string) float64 { return got["throughput/"+name].CPU }
	if n, d := cpu("nginx"), cpu("deadlabourd"); n > 0 && d > 0 {
		fmt.Fprintf(out, "| CPU per request of the process in the middle (wrk run), µs | %.1f (the fake) | %.1f | %.1f | %.2f× nginx's CPU per request |\n",
			cpu("direct"), n, d, d/n)
	}
	if n, g := cpu("nginx"), cpu("go-httputil"); n > 0 && g > 0 {
		fmt.Fprintf(out, "| CPU per request of the bare Go httputil.ReverseProxy, µs | | | %.1f | %.2f× nginx's |\n", g, g/n)
	}
	for _, q := range []string{"p50", "p99"} {
		limit := map[string]float64{"p50": 0.3, "p99": 1.0}[q]
		dir := p("rate", "direct", q)
		if dir == 0 {
			continue
		}
		add := p("rate", "deadlabourd", q) - dir
		v := verdict(add <= limit)
		if add < 0 || p("rate", "nginx", q) < dir {
			v = "disturbed (a proxy beat the direct call): rerun"
		}
		fmt.Fprintf(out, "| latency %s at 500 req/s, ms | %.3f | %.3f (%+.3f) | %.3f (%+.3f) | added %.3f ms (target ≤ %.1f ms): %s |\n",
			q, dir, p("rate", "nginx", q), p("rate", "nginx", q)-dir, p("rate", "deadlabourd", q), add, add, limit, v)
	}
	for _, q := range []string{"p50", "p99"} {
		dir := p("stream", "direct", q)
		if dir == 0 {
			continue
		}
		add := p("stream", "deadlabourd", q) - dir
		target := ""
		if q == "p99" {
			v := verdict(add <= 0.1)
			if add < 0 || p("stream", "nginx", q) < dir {
				v = "disturbed (a proxy beat the direct call): rerun"
			}
			target = fmt.Sprintf("added %.3f ms (target ≤ 0.1 ms): %s", add, v)
		}
		fmt.Fprintf(out, "| stream event delay %s, ms | %.3f | %.3f (%+.3f) | %.3f (%+.3f) | %s |\n",
			q, dir, p("stream", "nginx", q), p("stream", "nginx", q)-dir, p("stream", "deadlabourd", q), add, target)
	}
	if m := got["memory/deadlabourd"]; m.Streams > 0 {
		fmt.Fprintf(out, "| memory per open stream (RSS growth / %d streams), KiB | | %.1f | %.1f | bounded: stated |\n",
			m.Streams, got["memory/nginx"].Bytes/1024, m.Bytes/1024)
	}
	for k, l := range got {
		if l.Errors > 0 {
			fmt.Fprintf(out, "\nwarning: %s had %d errors\n", k, l.Errors)
		}
	}
	return nil
}
