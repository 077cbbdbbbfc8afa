package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleWithOpenBegins is the daemon's CPU, as a fraction of one
// core, while nothing happens but its polls on 8 simulated GPUs, with 0 and
// with 10,000 event-API requests begun and never ended (issue "Nothing
// lost, round two": they once took idle CPU from 5 % to 45 % of a core).
// Timed: run it with `make bench`, not make test.
func BenchmarkIdleWithOpenBegins(b *testing.B) {
	for _, open := range []int{0, 10000} {
		for _, weighting := range []string{"tokens", "time"} {
			b.Run(fmt.Sprintf("weighting=%s/open=%d", weighting, open), func(b *testing.B) {
				cfg := fmt.Sprintf("node: bench\ngpu: {interval: 100ms, report_interval: 10s}\nadmin: {listen: 127.0.0.1:0}\n"+
					"attribution: {weighting: %s}\nspool: {dir: %s}\nupstreams:\n  - {name: svc, listen: 127.0.0.1:0, target: http://127.0.0.1:9, gpus: [0, 1, 2, 3, 4, 5, 6, 7]}\n",
					weighting, b.TempDir())
				d := startDaemon(b, cfg, "h100:8")
				start := time.Now().UTC().Format(time.RFC3339Nano)
				for i := 0; i < open; i += 500 {
					var body bytes.Buffer
					body.WriteString("[")
					for k := i; k < i+500 && k < open; k++ {
						if k > i {
							body.WriteString(",")
						}
						fmt.Fprintf(&body, `{"type":"begin","id":"open-%05d","upstream":"svc","model":"m","start":%q}`, k, start)
					}
					body.WriteString("]")
					resp, err := http.Post("http://"+d.AdminAddr()+"/v1/requests", "application/json", &body)
					if err != nil {
						b.Fatal(err)
					}
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						b.Fatalf("begins: %d", resp.StatusCode)
					}
				}
				time.Sleep(2 * time.Second) // settle in
				var before, after syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &before)
				t0 := time.Now()
				time.Sleep(5 * time.Second)
				syscall.Getrusage(syscall.RUSAGE_SELF, &after)
				cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
				b.ReportMetric(100*cpu.Seconds()/time.Since(t0).Seconds(), "%core")
				d.stop()
			})
		}
	}
}
