package daemon

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/collector/forward"
	"github.com/deadlabour/deadlabour/config"
)

// Forwarding mode (config forward): the daemon is a sidecar. Its proxies
// (and event API) report to a forwarder that posts to the node daemon's
// event API instead of the span queue; the engine does not run (no ledger,
// no records), no GPU is opened and nothing is written to InfluxDB.

// newForward sets forwarding mode up, before anything else is opened.
func (d *Daemon) newForward() error {
	f := d.cfg.Forward
	if !f.Enabled() {
		return nil
	}
	d.cfg.GPU.Enabled = false
	d.cfg.Influx.URL = "" // the node daemon writes the records
	var token []byte
	if f.TokenFile != "" {
		t, err := admin.ReadToken(f.TokenFile)
		if err != nil {
			return &config.Error{Problems: []config.Problem{{Key: "forward.token_file", Msg: err.Error()}}}
		}
		token = t
	}
	fw, err := forward.New(forward.Options{URL: f.Target(os.Getenv), Token: token, Batch: f.Batched(), FlushInterval: f.Interval(),
		MaxQueue: f.Queue(), FlushTimeout: FlushTimeout, Logger: d.log.With("component", "forward")})
	if err != nil {
		return err
	}
	d.fwd = fw
	d.log.Info("forwarding mode: requests go to the node daemon's event API; no GPUs, no ledger, no InfluxDB here", "url", f.Target(os.Getenv))
	return nil
}

// runLedger runs the engine, or in forwarding mode the forwarder, which
// posts what is queued when ctx ends.
func (d *Daemon) runLedger(ctx context.Context) {
	if d.fwd == nil {
		d.engine.Run(ctx)
		return
	}
	d.fwd.Run(ctx)
	st := d.fwd.Stats()
	d.log.Info("forward: stopped", "events_sent", st.Sent, "events_dropped", st.Dropped, "events_refused", st.Refused)
}

// forwardDevices is, in forwarding mode, what an upstream's gpus name: the
// UUIDs as written, and those of env: and file: sources, read when asked
// (a file another container writes may come late) and kept once found.
func (d *Daemon) forwardDevices(u config.Upstream) func() []string {
	var mu sync.Mutex
	var found []string
	var tried time.Time
	warned := false
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		if found != nil || time.Since(tried) < time.Second {
			return found
		}
		tried = time.Now()
		var out []string
		unresolved := ""
		for _, g := range u.GPUs {
			var list string
			switch {
			case strings.HasPrefix(g, config.GPUSourceEnv):
				list = os.Getenv(strings.TrimPrefix(g, config.GPUSourceEnv))
			case strings.HasPrefix(g, config.GPUSourceFile):
				b, _ := os.ReadFile(strings.TrimPrefix(g, config.GPUSourceFile))
				list = string(b)
			default:
				out = append(out, g)
				continue
			}
			ids := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
			if len(ids) == 0 || ids[0] == "all" || ids[0] == "none" || ids[0] == "void" {
				unresolved = g
				continue
			}
			out = append(out, ids...)
		}
		if unresolved != "" {
			if !warned {
				warned = true
				d.log.Warn("forward: an upstream's GPUs are not known yet (want UUIDs); its requests go to the node daemon without them",
					"upstream", u.Name, "gpus", unresolved)
			}
			return out
		}
		found = out
		if found == nil {
			found = []string{}
		}
		return found
	}
}

func (d *Daemon) forwardDevicesOf(upstream string) func() []string {
	for _, u := range d.cfg.Upstreams {
		if u.Name == upstream {
			return d.forwardDevices(u)
		}
	}
	return nil
}
