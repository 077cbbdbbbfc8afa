package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Forward makes the daemon a forwarding sidecar: its proxies meter as
// usual, but each request's begin and end go to another deadlabourd's
// event API (the node's DaemonSet, which holds NVML and the ledger)
// instead of a ledger of its own. In this mode the daemon opens no GPUs
// (gpu.enabled is taken as false) and writes nothing to InfluxDB (the node
// daemon writes the records). Off while url is empty.
type Forward struct {
	// URL is the node daemon's admin listener, e.g. http://$(NODE_IP):9464
	// ($(NAME): the environment variable NAME); events are posted to its
	// /v1/requests.
	URL string `yaml:"url"`
	// TokenFile holds the node daemon's admin.token_file token, sent as a
	// bearer token; "": none (a loopback node daemon without a token).
	TokenFile string `yaml:"token_file"`
	// Batch is the most events in one post (default 100, at most 1000,
	// the event API's limit).
	Batch int `yaml:"batch"`
	// FlushInterval is the longest an event waits to be posted (default 200ms).
	FlushInterval Duration `yaml:"flush_interval"`
	// MaxQueue is the most events waiting to be posted (default 10000):
	// beyond it events are dropped, counted and logged, and the proxy never
	// waits.
	MaxQueue int `yaml:"max_queue"`
}

// Defaults of the forward section, applied where a key is zero.
const (
	DefaultForwardBatch         = 100
	DefaultForwardFlushInterval = 200 * time.Millisecond
	DefaultForwardMaxQueue      = 10000
	// MaxForwardBatch is the event API's limit of events in one post.
	MaxForwardBatch = 1000
)

// Enabled says whether the daemon forwards: forward.url is set.
func (f Forward) Enabled() bool { return f.URL != "" }

// Batched, Interval and Queue are the settings with their defaults.
func (f Forward) Batched() int {
	if f.Batch <= 0 {
		return DefaultForwardBatch
	}
	return f.Batch
}

func (f Forward) Interval() time.Duration {
	if f.FlushInterval <= 0 {
		return DefaultForwardFlushInterval
	}
	return f.FlushInterval.D()
}

func (f Forward) Queue() int {
	if f.MaxQueue <= 0 {
		return DefaultForwardMaxQueue
	}
	return f.MaxQueue
}

// GPU sources: an upstreams[].gpus entry "env:NAME" is the GPUs listed
// (comma-separated) in the environment variable NAME, as the NVIDIA device
// plugin sets NVIDIA_VISIBLE_DEVICES to the UUIDs of a container's GPUs;
// "file:PATH" those listed in a file (another container of the pod may
// write its NVIDIA_VISIBLE_DEVICES there). Forwarding mode only: the
// sidecar names its pod's GPUs to the node daemon by UUID.
const (
	GPUSourceEnv  = "env:"
	GPUSourceFile = "file:"
)

// IsGPUSource says whether a gpus entry is an env: or file: source.
func IsGPUSource(g string) bool {
	return strings.HasPrefix(g, GPUSourceEnv) || strings.HasPrefix(g, GPUSourceFile)
}

func (v *validator) validateForward() {
	f := v.c.Forward
	if !f.Enabled() {
		for i, u := range v.c.Upstreams {
			for j, g := range u.GPUs {
				if IsGPUSource(g) {
					v.add(fmt.Sprintf("upstreams[%d].gpus[%d]", i, j), "%q: env: and file: GPUs are for a forwarding sidecar (forward.url); name GPUs by index or UUID", g)
				}
			}
		}
		return
	}
	v.httpURL("forward.url", envRefRe.ReplaceAllString(f.URL, "node"))
	if f.Batch < 0 || f.Batch > MaxForwardBatch {
		v.add("forward.batch", "want 1 to %d events (0: the default %d), got %d", MaxForwardBatch, DefaultForwardBatch, f.Batch)
	}
	if f.FlushInterval < 0 {
		v.add("forward.flush_interval", "must not be negative, got %s", f.FlushInterval.D())
	}
	if f.MaxQueue < 0 {
		v.add("forward.max_queue", "must not be negative, got %d", f.MaxQueue)
	}
	for i, u := range v.c.Upstreams {
		for j, g := range u.GPUs {
			if name, ok := strings.CutPrefix(g, GPUSourceEnv); ok && name == "" {
				v.add(fmt.Sprintf("upstreams[%d].gpus[%d]", i, j), "env: needs a variable name, e.g. env:NVIDIA_VISIBLE_DEVICES")
			}
			if name, ok := strings.CutPrefix(g, GPUSourceFile); ok && name == "" {
				v.add(fmt.Sprintf("upstreams[%d].gpus[%d]", i, j), "file: needs a path")
			}
		}
	}
}

var envRefRe = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// Target is url with each $(NAME) replaced by the environment variable
// NAME, as Kubernetes writes references (NODE_IP from status.hostIP).
func (f Forward) Target(getenv func(string) string) string {
	return envRefRe.ReplaceAllStringFunc(f.URL, func(m string) string { return getenv(m[2 : len(m)-1]) })
}
