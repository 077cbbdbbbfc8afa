package requests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/apierror"
	"github.com/deadlabour/deadlabour/internal/redact"
)

// Recorder receives the life of every metered request, from the proxy and
// from the event API (whose sink also takes whole spans: EventSink). Begin
// is called once when a request starts, End once when it has finished,
// whatever the outcome, with the same ID and Key. Both are called on the
// caller's goroutine (the proxy's request, the event API's handler under
// its lock): they must be cheap and must never block (queue, don't wait).
// The Devices slice is shared by all requests of an upstream: read it,
// don't modify it.
//
// The proxy calls Begin when a request's body is read and held, before it
// is forwarded, with the span's ID, Key, Upstream, Model, Tenant, Start and
// Devices; a request answered by the proxy before it was begun (no room
// for its body, a body too large or too slow) gets End alone, not served.
// Key is unique per request (ID is the client's and may repeat): key
// requests by it. The event API leaves Key empty: it refuses to begin an
// ID that is open.
//
// What a proxied request's span says:
//
//   - ID: the client's X-Request-Id when it is sane, else a random 128-bit
//     hex id; either way it is sent to the upstream and back to the client.
//   - Status: the upstream's status code; client_closed when the client went
//     away before the response was complete (a stream whose end marker
//     reached the client is complete, whatever the client does next);
//     upstream_error when the upstream answered 2xx and then failed (an
//     error object inside the body, or the body cut short); the proxy's own
//     408 (the body did not arrive within BodyReadTimeout), 413, 502, 503
//     (no room for the body in the BodyBudget) or 504 when it answered
//     itself, even to a client gone by then, unless its going was the
//     failure. A request written onto a kept-alive connection the upstream
//     had closed, unanswered, is sent once more (see retrying).
//   - Start: when the request's body had been read and held, and it was
//     forwarded (the GPUs cannot work on it before): a wait for room in the
//     BodyBudget or a slow upload is not part of it. A request the proxy
//     answered itself before that (408, 413, 503) starts at its arrival.
//   - Served: the upstream had the whole request and did not refuse it with
//     a 4xx; false for a request it never saw, and for the proxy's own 502
//     (the upstream sent nothing).
//   - FirstToken: when the first streamed event with generated output
//     passed; zero for a non-streamed answer.
//   - Tokens: from the last usage block (or llama.cpp timings) seen, count
//     by count (UsageSource reported, or reported_partial when the response
//     ended before its own end marker); else counted from the response (estimated: one token per
//     streamed event with generated output, or a quarter of the generated
//     text's bytes for a whole body; a quarter of the prompt text's bytes
//     for the prompt); -1 and unknown when the response could not be read;
//     -1 and invalid when a count the upstream sent was over
//     dialect.MaxTokens.
//   - Tenant: the configured tenant header, else a keyed hash of the bearer
//     API key, else empty. Keys, prompts and completions are never kept.
type Recorder interface {
	// Begin: a request started. Its span holds what is known then (ID,
	// Key, Upstream, Tenant, Start, Devices), which a request still open
	// at shutdown is recorded with.
	Begin(span estimator.Span)
	End(span estimator.Span)
}

// Defaults of Options.
const (
	DefaultMaxRequestBytes = 32 << 20
	DefaultMaxUsageBytes   = 1 << 20
	DefaultDialTimeout     = 5 * time.Second
	DefaultBodyReadTimeout = 60 * time.Second
)

// bodyStep is the room a body of unknown length takes at first, and by
// which it takes more as its bytes arrive (doubling what it holds).
const bodyStep = 64 << 10

// Options configure one proxy, for one upstream.
type Options struct {
	// Name is the upstream's name, written in every span.
	Name string
	// Target is the upstream's base URL, e.g. "http://127.0.0.1:8000". A
	// path in it is prefixed to every request's path.
	Target string
	// Devices are the GPU ids the upstream runs on (as estimator.Interval.Device).
	Devices []string
	// DevicesFunc, if set, replaces Devices: it is asked once per request,
	// when the request begins (the GPUs found from the upstream's processes,
	// which change when it restarts). It must be cheap and safe for
	// concurrent use.
	DevicesFunc func() []string
	// PreserveHost, if set, says whether the upstream sees the Host the
	// client sent (true) or the target's (false). Unset: the client's for
	// an http target on an IP literal or localhost (a server that serves
	// any name, and may build URLs from it), the target's otherwise (an
	// https target, whose certificate and SNI name the target, or a
	// virtual host by name, which would answer another Host 404 or 421).
	PreserveHost *bool
	// TenantHeader, if set, names a request header whose value is the
	// tenant, hashed like an API key unless TenantHeaderRaw. Requests
	// without it fall back to the API key's HMAC.
	TenantHeader string
	// TenantHeaderRaw keeps a header value that looks like a name (visible
	// ASCII, at most 64 bytes) as it is (config tenant_header_raw).
	TenantHeaderRaw bool
	// TenantSecret is the per-node HMAC key under which bearer API keys are
	// turned into tenants. Required, at least 16 bytes; keep it stable
	// across restarts or tenants change names.
	TenantSecret []byte
	// MaxRequestBytes caps a metered request's body, which the proxy reads
	// whole to learn the model (default DefaultMaxRequestBytes). Larger
	// requests are answered 413 and never reach the upstream.
	MaxRequestBytes int64
	// BodyBudget bounds the request bodies held in memory at once, shared
	// by all the proxies of a node (default: one of this proxy's own, of
	// DefaultMaxBufferedBytes).
	BodyBudget *BodyBudget
	// MaxUsageBytes caps what is kept of a non-streamed response (beyond it
	// only its tail is searched for usage) and of one streamed event
	// (beyond it the event is skipped) (default DefaultMaxUsageBytes).
	MaxUsageBytes int
	// NoIncludeUsage stops the proxy from adding
	// stream_options.include_usage to streamed OpenAI-style requests that
	// did not ask for usage (config upstreams[].include_usage: false).
	NoIncludeUsage bool
	// BodyReadTimeout bounds reading a metered request's body once room
	// for it is held (config proxy.body_read_timeout, default
	// DefaultBodyReadTimeout): a client that sends it slower is answered
	// 408 and its room given back.
	BodyReadTimeout time.Duration
	// DialTimeout bounds connecting to the upstream (default DefaultDialTimeout).
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for the upstream's response headers,
	// answered 504 when it passes. Zero means no bound: a non-streamed
	// generation sends its headers only when it is done.
	HeaderTimeout time.Duration
	// Transport replaces the proxy's own upstream transport (tests).
	Transport http.RoundTripper
	// Now is the clock (default time.Now).
	Now func() time.Time
	// quiet, if set, replaces defaultEpisodeQuiet: how long a kind of
	// failure must stay away before its run is logged as over (tests).
	quiet time.Duration
	// wrote, if set, is called when a metered request has reached the
	// upstream whole (tests wait for it).
	wrote func()
	// Logger receives the proxy's warnings and, at debug, one line a request
	// (never a prompt, a completion or a key). Default: discarded.
	Logger *slog.Logger
}

// Proxy is the metering reverse proxy of one upstream. It is an http.Handler.
type Proxy struct {
	name      string
	target    *url.URL
	devices   []string
	devFunc   func() []string
	tenants   tenants
	maxBody   int64
	budget    *BodyBudget
	maxUsage  int
	inject    bool
	headerTO  time.Duration // Options.HeaderTimeout
	keepHost  bool          // Options.PreserveHost, resolved
	bodyTO    time.Duration // Options.BodyReadTimeout
	now       func() time.Time
	log       *slog.Logger
	rec       Recorder
	wroteHook func()
	endpoints map[string]dialect.Endpoint
	transport http.RoundTripper
	rp        *httputil.ReverseProxy

	// Runs of failures, logged at their start and end (see episode).
	unreachable, broken, encoded, full *episode

	keyPrefix string        // of every span Key, unique to this proxy
	keys      atomic.Uint64 // requests metered, for span Keys
}

// New makes the proxy of one upstream, reporting to rec.
func New(opts Options, rec Recorder) (*Proxy, error) {
	if opts.Name == "" {
		return nil, errors.New("requests: upstream name is empty")
	}
	if rec == nil {
		return nil, errors.New("requests: no recorder")
	}
	target, err := url.Parse(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("requests: upstream %s: target: %w", opts.Name, err)
	}
	if (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("requests: upstream %s: target %q is not an http(s) URL with a host", opts.Name, redact.URL(opts.Target))
	}
	if len(opts.TenantSecret) < 16 {
		return nil, fmt.Errorf("requests: upstream %s: tenant secret has %d bytes, want at least 16", opts.Name, len(opts.TenantSecret))
	}
	p := &Proxy{
		name:      opts.Name,
		target:    target,
		devices:   slices.Clip(slices.Clone(opts.Devices)),
		devFunc:   opts.DevicesFunc,
		tenants:   tenants{header: opts.TenantHeader, raw: opts.TenantHeaderRaw, secret: slices.Clone(opts.TenantSecret)},
		maxBody:   cmpOr(opts.MaxRequestBytes, DefaultMaxRequestBytes),
		budget:    opts.BodyBudget,
		maxUsage:  cmpOr(opts.MaxUsageBytes, DefaultMaxUsageBytes),
		inject:    !opts.NoIncludeUsage,
		headerTO:  opts.HeaderTimeout,
		bodyTO:    cmpOr(opts.BodyReadTimeout, DefaultBodyReadTimeout),
		now:       opts.Now,
		log:       opts.Logger,
		rec:       rec,
		wroteHook: opts.wrote,
		endpoints: dialect.Endpoints(),
		transport: opts.Transport,
		// A control character: no request id (visible ASCII) can look
		// like a key, and upstream names are unique.
		keyPrefix: "\x1fproxy/" + opts.Name + "/",
	}
	p.keepHost = DefaultPreserveHost(target)
	if opts.PreserveHost != nil {
		p.keepHost = *opts.PreserveHost
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.budget == nil {
		p.budget = NewBodyBudget(0, 0)
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("upstream", p.name)
	p.unreachable = &episode{log: p.log, quiet: opts.quiet, warn: "upstream unreachable or sent no response headers", recovered: "upstream answering again"}
	p.broken = &episode{log: p.log, quiet: opts.quiet, warn: "upstream answers fail after their headers (error inside the answer, or cut short)", recovered: "upstream answers complete again"}
	p.full = &episode{log: p.log, quiet: opts.quiet, warn: "request bodies find no room in proxy.max_buffered_bytes: answered 503", recovered: "request bodies find room again"}
	p.encoded = &episode{log: p.log, quiet: opts.quiet, warn: "upstream compressed a stream the proxy asked for unencoded; its usage chunk reaches the client", recovered: "upstream streams unencoded again"}
	if p.transport == nil {
		p.transport = newTransport(cmpOr(opts.DialTimeout, DefaultDialTimeout), opts.HeaderTimeout)
	}
	p.transport = newRetrying(p.transport, p.log)
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p.transport,
		// Streams (text/event-stream, or no Content-Length: NDJSON) are
		// flushed at every read, so they keep their pace; a whole answer
		// goes out in one write.
		FlushInterval:  0,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		// Per request (copy errors): failures are logged by episode.
		ErrorLog:   slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BufferPool: &bufferPool{},
	}
	return p, nil
}

// DefaultPreserveHost is Options.PreserveHost when unset: true for an http
// target whose host is an IP literal or localhost, false otherwise.
func DefaultPreserveHost(target *url.URL) bool {
	h := target.Hostname()
	return target.Scheme == "http" && (net.ParseIP(h) != nil || strings.EqualFold(h, "localhost"))
}

// cmpOr is v, or def when v is not positive.
func cmpOr[T int | int64 | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// newTransport is the upstream transport: kept-alive connections (many per
// host, since one server takes all the traffic), no HTTP proxy from the
// environment (the upstream is the next hop), and no compression of its own
// (Accept-Encoding passes as the client sent it).
func newTransport(dial, header time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: header,
		DisableCompression:    true,
	}
}

// CloseIdleConnections closes the proxy's idle upstream connections. Call
// it when the proxy is no longer served.
func (p *Proxy) CloseIdleConnections() {
	if c, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	// SetURL puts the target's host in Host, as nginx's default
	// (proxy_set_header Host $proxy_host); with PreserveHost the upstream
	// sees the client's, as behind proxy_set_header Host $host.
	pr.SetURL(p.target)
	if p.keepHost {
		pr.Out.Host = pr.In.Host
	}
	// ReverseProxy removes the forwarding headers before Rewrite. This proxy
	// stands in for the upstream on the same host, not at a trust boundary,
	// so it passes them on as the client sent them and adds none: the
	// upstream sees the request it would have seen without the proxy.
	for _, h := range [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
	pr.Out.Header.Set(requestIDHeader, ex.id)
	ex.trace.set(pr.Out.Header)
	if ex.dialect != nil {
		// The body is already read: waiting for a 100 Continue from the
		// upstream would only add latency.
		pr.Out.Header.Del("Expect")
		if pr.Out.Body != nil {
			// ReverseProxy wraps the body in a reader of its own, which
			// makes the transport write the headers and the body in two
			// writes (and the upstream read two segments). A body it knows
			// to be in memory goes out with the headers in one.
			pr.Out.Body = io.NopCloser(bytes.NewReader(ex.reqBody))
		}
	}
	if ex.injected {
		// The proxy edits this stream: it must come unencoded.
		pr.Out.Header.Set("Accept-Encoding", "identity")
	}
}

func (p *Proxy) modifyResponse(res *http.Response) error {
	ex := exchangeOf(res.Request.Context())
	p.unreachable.ok(p.now())
	res.Header.Set(requestIDHeader, ex.id)
	// A 101's body is the upgraded connection; it must stay as it is.
	if res.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	if ex.dialect == nil {
		res.Body = &headFirst{ReadCloser: res.Body, w: ex.w}
		return nil
	}
	ex.status = res.StatusCode
	f, coding := framingOf(res.Header), codingOf(res.Header)
	bw := newBodyWatcher(ex.dialect, f, p.maxUsage, p.now)
	switch coding {
	case codingIdentity:
	case codingGzip, codingDeflate:
		if f != framingNone {
			bw.decode(coding)
		}
	default:
		bw.framing = framingNone
		if f != framingNone {
			p.log.Debug("response in a content coding the meter cannot read: usage unknown", "request_id", ex.id, "coding", coding)
		}
	}
	if ex.dialect.Header != nil {
		if u, ok := ex.dialect.Header(res.Header); ok {
			bw.headerUsage(u)
		}
	}
	ex.body = &watchedBody{ReadCloser: res.Body, watch: bw}
	if ex.injected && res.StatusCode == http.StatusOK && bw.framing == framingSSE {
		if bw.dec != nil {
			p.encoded.fail(p.now(), "request_id", ex.id, "coding", coding)
		} else {
			p.encoded.ok(p.now())
			ex.body.filter = newUsageFilter(p.maxUsage)
			res.ContentLength = -1 // the edits change the length
			res.Header.Del("Content-Length")
		}
	}
	res.Body = &headFirst{ReadCloser: ex.body, w: ex.w}
	return nil
}

// headFirst is an upstream body that, when reading it fails, first sends
// the client what ReverseProxy has written of the response: its status line
// and headers (written, but sent by net/http only with the first bytes of
// the body or a flush) and the body so far. Without it an upstream that fails
// after its headers and before its body's first bytes (or before a whole
// answer's end: one write) leaves the client a connection closed with no
// status at all; with it, the client has the status that came and a body
// cut short. Bytes read with the error are handed on first, the error at the
// next read, so that ReverseProxy writes them before it gives up.
type headFirst struct {
	io.ReadCloser
	w   *flushLock
	err error
}

// flushLock is the response writer ReverseProxy writes to, with its
// flushes and writes in one lock: ReverseProxy flushes a stream from a
// timer goroutine (its maxLatencyWriter) while headFirst may flush from the
// handler's, and a net/http response is not safe for both at once.
type flushLock struct {
	http.ResponseWriter
	mu sync.Mutex
}

func (f *flushLock) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController calls.
func (f *flushLock) FlushError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return http.NewResponseController(f.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the writer's other features.
func (f *flushLock) Unwrap() http.ResponseWriter { return f.ResponseWriter }

func (h *headFirst) Read(p []byte) (int, error) {
	if h.err != nil {
		_ = h.w.FlushError()
		return 0, h.err
	}
	n, err := h.ReadCloser.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case n > 0:
		h.err, err = err, nil
	default:
		_ = h.w.FlushError()
	}
	return n, err
}

// errorHandler answers when the upstream gave no response: 504 when it took
// too long, 502 otherwise.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	status, msg := http.StatusBadGateway, "upstream "+p.name+" is unreachable"
	if ne, ok := errors.AsType[net.Error](err); (ok && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		status, msg = http.StatusGatewayTimeout, "upstream "+p.name+" did not answer in time"
		if p.headerTO > 0 && ex.wrote.Load() {
			msg = fmt.Sprintf("upstream %s sent no response headers within %s (response_header_timeout)", p.name, p.headerTO)
		}
	}
	// The proxy's own answer to the upstream's failure, whenever the
	// client leaves (a client that half-closes its connection after its
	// request ends its context too, and still reads the answer); unless
	// the failure was the client's leaving itself.
	ex.failed, ex.proxied = status, true
	if r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		ex.cut = true
		p.log.Debug("client went away before the upstream answered", "request_id", ex.id)
	} else {
		p.unreachable.fail(p.now(), "request_id", ex.id, "status", status, "err", err)
	}
	p.writeError(w, ex, status, msg)
}

// writeError answers with an OpenAI-shaped error, which clients' SDKs show.
func (p *Proxy) writeError(w http.ResponseWriter, ex *exchange, status int, msg string) {
	w.Header().Set(requestIDHeader, ex.id)
	apierror.Write(w, status, "proxy_error", "deadlabour proxy: "+msg)
}

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{ pool sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return *buf
	}
	// 8 KiB: an event is a few hundred bytes and an answer a few KiB; a
	// larger buffer would only be memory held by every open stream.
	return make([]byte, 8<<10)
}

func (b *bufferPool) Put(buf []byte) { b.pool.Put(&buf) }
