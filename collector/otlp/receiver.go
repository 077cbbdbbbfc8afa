package otlp

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/clip"
)

// Request is one inference request mapped from one span: the span the
// estimator charges, and what the trace says beside it.
type Request struct {
	estimator.Span
	// RawID is the request id as the span gave it (e.g. vLLM's
	// "chatcmpl-<X-Request-Id>"); Span.ID is the same with the server's
	// prefix taken off, so that it matches the proxy's X-Request-Id.
	RawID string
	// Dialect is the mapping that read the span: DialectVLLM,
	// DialectSGLang or DialectGenAI.
	Dialect string
	// TraceID and SpanID, in hex: what the span is in its trace.
	TraceID, SpanID string
	// Received is when the receiver took the span (its clock).
	Received time.Time
	// Late: the span ended more than Options.LateAfter before it was
	// received.
	Late bool
}

// Recorder takes the requests mapped from one export request, all of
// them or none: a refusal makes the exporter send the whole batch again.
// It is called on the receiver's goroutine and must not block (queue,
// don't wait). Return a *FullError when there is no room now: the
// exporter is told to retry later (HTTP 429 with Retry-After, gRPC
// UNAVAILABLE with RetryInfo); any other error is answered 503 /
// UNAVAILABLE, retryable, without a delay. The slice is the receiver's:
// keep the Requests, not the slice.
type Recorder interface {
	Record(batch []Request) error
}

// FullError says the recorder cannot take more now.
type FullError struct {
	// RetryAfter is how long the exporter should wait; 0: DefaultRetryAfter.
	RetryAfter time.Duration
	Reason     string
}

func (e *FullError) Error() string {
	if e.Reason == "" {
		return "otlp: the recorder is full"
	}
	return "otlp: the recorder is full: " + e.Reason
}

// Source says which upstream the spans of one resource belong to. A
// resource matches when its service.name is ServiceName and, where they
// are set, its service.instance.id is ServiceInstanceID and its host.name
// is HostName. The first source that matches wins.
type Source struct {
	ServiceName       string
	ServiceInstanceID string
	HostName          string
	// Upstream is the name written in the spans (as a proxy's upstream).
	Upstream string
	// Devices the upstream runs on (estimator.Interval.Device ids); shared
	// by all its spans: read them, don't modify them.
	Devices []string
	// Model is the model name for spans that carry none (recent vLLM
	// releases set no gen_ai.response.model on llm_request).
	Model string
}

// Defaults of Options.
const (
	DefaultMaxBodyBytes = 8 << 20
	DefaultRetryAfter   = 5 * time.Second
	maxIDLen            = 256
)

// Options configure a Receiver.
type Options struct {
	// Sources map resources to upstreams. Required: at least one.
	Sources []Source
	// Token, if set, is the bearer token every export must carry
	// (HTTP Authorization: Bearer ..., gRPC metadata authorization).
	Token string
	// MaxBodyBytes caps an export body, compressed and decompressed alike
	// (default DefaultMaxBodyBytes); the lead's gRPC server takes it from
	// GRPCServerOptions.
	MaxBodyBytes int64
	// LateAfter: a span that ended longer than this before it was received
	// is marked Late and counted; 0 marks none.
	LateAfter time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// Receiver is an OTLP trace receiver: Handler serves OTLP/HTTP,
// RegisterGRPC OTLP/gRPC. Safe for concurrent use.
type Receiver struct {
	opts  Options
	rec   Recorder
	token []byte
	stats counters

	mu      sync.Mutex
	unknown map[string]bool // service names warned about, at most maxUnknown
}

const maxUnknown = 64

// counters are the receiver's, read through Stats.
type counters struct {
	exports, refused                        atomic.Uint64
	received, used, ignored, rejected, late atomic.Uint64
	dropped                                 atomic.Uint64
}

// Stats are the receiver's counters since it was made: export requests
// answered with success (full or partial) and refused whole (4xx, 5xx);
// spans received in decoded bodies, and of those: used (handed to the
// recorder and taken), ignored (not inference requests), rejected
// (inference requests that could not be used: partial success), late
// (used, Late), dropped (in a batch the recorder refused; the exporter
// retries them).
type Stats struct {
	Exports, Refused                        uint64
	Received, Used, Ignored, Rejected, Late uint64
	Dropped                                 uint64
}

// New makes a receiver that hands what it maps to rec.
func New(opts Options, rec Recorder) (*Receiver, error) {
	if rec == nil {
		return nil, errors.New("otlp: a receiver needs a recorder")
	}
	if len(opts.Sources) == 0 {
		return nil, errors.New("otlp: a receiver needs at least one source")
	}
	for i, s := range opts.Sources {
		if strings.TrimSpace(s.ServiceName) == "" || s.Upstream == "" {
			return nil, fmt.Errorf("otlp: source %d needs a service name and an upstream", i)
		}
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{opts: opts, rec: rec, unknown: map[string]bool{}}
	if opts.Token != "" {
		r.token = []byte("Bearer " + opts.Token)
	}
	return r, nil
}

// Stats reads the counters.
func (r *Receiver) Stats() Stats {
	c := &r.stats
	return Stats{Exports: c.exports.Load(), Refused: c.refused.Load(), Received: c.received.Load(),
		Used: c.used.Load(), Ignored: c.ignored.Load(), Rejected: c.rejected.Load(), Late: c.late.Load(),
		Dropped: c.dropped.Load()}
}

// authorized says whether an Authorization value carries the token, in
// constant time.
func (r *Receiver) authorized(values []string) bool {
	if r.token == nil {
		return true
	}
	ok := 0
	for _, v := range values {
		ok |= subtle.ConstantTimeCompare([]byte(v), r.token)
	}
	return ok == 1
}

// outcome is what became of one export request's spans.
type outcome struct {
	rejected int64
	message  string // the partial success's error message
	err      error  // the recorder's refusal
}

// response is the answer to an export that succeeded: the partial
// success, where spans were rejected.
func (o *outcome) response() ptraceotlp.ExportResponse {
	resp := ptraceotlp.NewExportResponse()
	if o.rejected > 0 {
		ps := resp.PartialSuccess()
		ps.SetRejectedSpans(o.rejected)
		ps.SetErrorMessage(o.message)
	}
	return resp
}

// export maps the spans of one decoded export request and hands the
// requests to the recorder.
func (r *Receiver) export(td ptrace.Traces) outcome {
	now := r.opts.Now()
	m := mapper{now: now, lateAfter: r.opts.LateAfter}
	var reasons rejections
	var batch []Request
	var received, ignored int
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		src, service := r.source(rs)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			received += spans.Len()
			for k := 0; k < spans.Len(); k++ {
				req, why := m.mapSpan(spans.At(k), src)
				switch {
				case why == notInference:
					ignored++
				case why == noSource:
					reasons.add(why)
					r.warnUnknown(service)
				case why != "":
					reasons.add(why)
				default:
					batch = append(batch, req)
				}
			}
		}
	}
	c := &r.stats
	c.received.Add(uint64(received))
	c.ignored.Add(uint64(ignored))
	c.rejected.Add(uint64(reasons.n))
	out := outcome{rejected: int64(reasons.n), message: reasons.String()}
	if len(batch) > 0 {
		if err := r.rec.Record(batch); err != nil {
			c.dropped.Add(uint64(len(batch)))
			out.err = err
			return out
		}
		late := 0
		for i := range batch {
			if batch[i].Late {
				late++
			}
		}
		c.used.Add(uint64(len(batch)))
		c.late.Add(uint64(late))
	}
	if reasons.n > 0 {
		r.opts.Logger.Debug("otlp: spans rejected", "rejected", reasons.n, "reasons", out.message)
	}
	return out
}

// source finds the source of a resource, and its service.name.
func (r *Receiver) source(rs ptrace.ResourceSpans) (*Source, string) {
	attrs := rs.Resource().Attributes()
	service := stringAttr(attrs, "service.name")
	if service == "" {
		return nil, ""
	}
	for i := range r.opts.Sources {
		s := &r.opts.Sources[i]
		if s.ServiceName != service {
			continue
		}
		if s.ServiceInstanceID != "" && s.ServiceInstanceID != stringAttr(attrs, "service.instance.id") {
			continue
		}
		if s.HostName != "" && s.HostName != stringAttr(attrs, "host.name") {
			continue
		}
		return s, service
	}
	return nil, service
}

// warnUnknown warns once per service name that sent inference spans and
// matches no source (at most maxUnknown names are remembered).
func (r *Receiver) warnUnknown(service string) {
	r.mu.Lock()
	seen := r.unknown[service]
	if !seen && len(r.unknown) < maxUnknown {
		r.unknown[service] = true
	}
	r.mu.Unlock()
	if !seen {
		r.opts.Logger.Warn("otlp: inference spans from a service no source matches; they are rejected",
			"service.name", truncate(service, 128))
	}
}

// rejections count rejected spans by reason.
type rejections struct {
	n       int
	reasons []string
	counts  []int
}

func (rj *rejections) add(why string) {
	rj.n++
	for i, r := range rj.reasons {
		if r == why {
			rj.counts[i]++
			return
		}
	}
	rj.reasons = append(rj.reasons, why)
	rj.counts = append(rj.counts, 1)
}

// String is the partial success's message: each reason with its count.
func (rj *rejections) String() string {
	if rj.n == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d inference span(s) rejected: ", rj.n)
	for i, r := range rj.reasons {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d %s", rj.counts[i], r)
	}
	return b.String()
}

// truncate is s clipped to n bytes (clip.String), "..." where it was cut.
func truncate(s string, n int) string {
	c := clip.String(s, n)
	if len(c) < len(s) {
		return c + "..."
	}
	return c
}
