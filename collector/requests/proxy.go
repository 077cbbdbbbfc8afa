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
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/apierror"
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
//     away before the response was complete; upstream_error when the
//     upstream answered 2xx and then failed (an error object inside the
//     body, or the body cut short); the proxy's own 408 (the body did not
//     arrive within BodyReadTimeout), 413, 502, 503 (no room for the body
//     in the BodyBudget) or 504 when it answered itself.
//   - Start: when the request's body had been read and held, and it was
//     forwarded (the GPUs cannot work on it before): a wait for room in the
//     BodyBudget or a slow upload is not part of it. A request the proxy
//     answered itself before that (408, 413, 503) starts at its arrival.
//   - Served: the upstream had the whole request and did not refuse it with
//     a 4xx; false for a request it never saw.
//   - FirstToken: when the first streamed event with generated output
//     passed; zero for a non-streamed answer.
//   - Tokens: from the last usage block seen, count by count (UsageSource
//     reported, or reported_partial when the response ended before its own
//     end marker); else counted from the response (estimated: one token per
//     streamed event with generated output, or a quarter of the generated
//     text's bytes for a whole body; a quarter of the prompt text's bytes
//     for the prompt); -1 and unknown when the response could not be read.
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
		return nil, fmt.Errorf("requests: upstream %s: target %q is not an http(s) URL with a host", opts.Name, opts.Target)
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

// exchange is what the proxy knows about one request, shared by its hooks
// through the request's context.
type exchange struct {
	id      string           // the client's X-Request-Id, or one made up
	key     string           // unique per request (Span.Key)
	dialect *dialect.Dialect // nil: not metered

	start    time.Time
	model    string
	stream   bool   // the client asked for a stream
	injected bool   // the proxy added stream_options.include_usage
	reqBody  []byte // the body sent upstream, include_usage added or not: for a prompt estimate
	tenant   string

	devices []string // the GPUs, fixed when the request begins
	held    int64    // bytes of the body budget held

	wrote  atomic.Bool  // the request reached the upstream whole (set on the transport's goroutine)
	status int          // the upstream's status code
	body   *watchedBody // the upstream's response body
	failed int          // status the proxy answered with itself
	cut    bool         // the client went away while sending its request
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP forwards one request, metering it when its path is an inference path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{id: requestID(r.Header.Get(requestIDHeader))}
	if ep, ok := p.endpoints[r.URL.Path]; ok && ep.Method == r.Method {
		ex.dialect = ep.Dialect
	}
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	if ex.dialect == nil {
		p.rp.ServeHTTP(w, r.WithContext(ctx))
		return
	}

	ex.start = p.now()
	ex.devices = p.devices
	if p.devFunc != nil {
		ex.devices = slices.Clip(p.devFunc())
	}
	ex.tenant = p.tenants.of(r.Header)
	ex.key = p.keyPrefix + strconv.FormatUint(p.keys.Add(1), 36)
	// End runs even when the copy of the response panics with
	// http.ErrAbortHandler, which is how ReverseProxy gives up on a client
	// that went away; so does the release of the body's budget, once
	// nothing reads the body any more.
	defer func() {
		p.end(r.Context(), ex)
		p.budget.release(ex.held)
	}()

	// The body is held in memory: wait for room for it in the node's
	// budget (its length, or a first step when the client did not say),
	// with room for the include_usage edit beside it, so that the edited
	// copy never has to wait for room while the body holds some.
	want := min(bodyStep, p.maxBody)
	if r.ContentLength >= 0 {
		want = min(r.ContentLength, p.maxBody)
	}
	if r.ContentLength > p.maxBody {
		want = 0 // refused unread below
	} else if p.inject && ex.dialect.IncludeUsage {
		want += dialect.MaxIncludeUsageGrowth
	}
	if !p.hold(w, r, ex, want) {
		return
	}

	// A client that sends its body slowly must not hold its room for
	// long: its read has a deadline (a writer that cannot set one, e.g.
	// in a test, reads without).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(p.bodyTO))
	body, err := p.readBody(r, ex)
	if err == nil {
		// Read whole: no deadline while the answer streams (the server
		// watches the connection for a close). A body not read whole keeps
		// it, which bounds net/http's discarding of its rest too.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			ex.failed = http.StatusRequestEntityTooLarge
			p.writeError(w, ex, ex.failed, fmt.Sprintf("request body is larger than this proxy's limit of %d bytes", p.maxBody))
			return
		}
		if nr, ok := errors.AsType[*noRoomError](err); ok {
			p.noRoom(w, r, ex, nr.want)
			return
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			ex.failed = http.StatusRequestTimeout
			p.writeError(w, ex, ex.failed, fmt.Sprintf("request body not received within %s (proxy.body_read_timeout)", p.bodyTO))
			return
		}
		ex.failed, ex.cut = http.StatusBadRequest, true
		p.writeError(w, ex, ex.failed, "cannot read the request body")
		return
	}
	req := ex.dialect.Request(body)
	ex.model, ex.stream = clip(req.Model, maxModel), req.Stream
	if p.inject && ex.dialect.IncludeUsage && req.Stream && !req.Asked {
		if edit, ok := dialect.IncludeUsageEdit(body); ok {
			// Only the edited copy is kept: the prompt estimate reads the
			// prompt's text, which the edit leaves as it is.
			body, ex.injected = edit.Apply(body), true
		}
	}
	ex.reqBody = body
	p.fit(ex, int64(len(body)))
	// Begun only now, with its body held: a request refused before (no
	// room, too large, too slow) never counted as in flight, and ends
	// unserved with no charge. It starts now too: it is forwarded now, and
	// the GPUs cannot work on it before. (Begun at its arrival, a request
	// that waited for room or sent its body slowly would begin past the
	// ledger's settle delay and be charged only from then, flagged
	// history_truncated.)
	ex.start = p.now()
	p.rec.Begin(estimator.Span{ID: ex.id, Key: ex.key, Upstream: p.name, Model: ex.model, Tenant: ex.tenant, Start: ex.start, Devices: ex.devices})

	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				ex.wrote.Store(true)
				if p.wroteHook != nil {
					p.wroteHook()
				}
			}
		},
	})
	out := r.WithContext(ctx)
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.ContentLength = int64(len(body))
	out.TransferEncoding = nil
	p.rp.ServeHTTP(w, out)
}

// hold takes n more bytes of the body budget for ex, which gives them back
// when it ends; when there is no room within the wait it answers 503 and
// returns false.
func (p *Proxy) hold(w http.ResponseWriter, r *http.Request, ex *exchange, n int64) bool {
	held, err := p.budget.acquire(r.Context(), n)
	if err != nil {
		p.noRoom(w, r, ex, min(n, p.budget.Size()))
		return false
	}
	ex.held += held
	p.full.ok(p.now())
	return true
}

// noRoom ends a request whose body found no room for want bytes within
// the wait: answered 503, unless its client left while it waited (not a
// refusal, and no one to answer: recorded client_closed).
func (p *Proxy) noRoom(w http.ResponseWriter, r *http.Request, ex *exchange, want int64) {
	if r.Context().Err() != nil {
		ex.failed, ex.cut = http.StatusServiceUnavailable, true
		return
	}
	p.refuse(w, ex, want)
}

// refuse answers 503 to a request whose body found no room for want more
// bytes in the budget.
func (p *Proxy) refuse(w http.ResponseWriter, ex *exchange, want int64) {
	ex.failed = http.StatusServiceUnavailable
	p.budget.refused.Add(1)
	p.full.fail(p.now(), "request_id", ex.id, "want_bytes", want, "budget_bytes", p.budget.Size())
	w.Header().Set("Retry-After", "1")
	p.writeError(w, ex, ex.failed, fmt.Sprintf("too many request bodies in flight: the node holds at most %d bytes of them (proxy.max_buffered_bytes); retry later", p.budget.Size()))
}

// fit makes the room ex holds n bytes, the body it keeps: it gives back
// what it took beyond (a body shorter than the cap, an edit not made), and
// takes what it lacks without waiting. The lack is a few bytes at most
// (an edit larger than the room taken for it); when even those find no room
// the request proceeds, unaccounted for them, rather than wait while
// holding room.
func (p *Proxy) fit(ex *exchange, n int64) {
	if surplus := ex.held - n; surplus > 0 {
		p.budget.release(surplus)
		ex.held -= surplus
	} else if got, ok := p.budget.tryAcquire(ex.held, -surplus); ok {
		ex.held += got
	}
}

// noRoomError: a body of unknown length found no room for its next step
// (want: all it needs with it); a step is taken at once or refused.
type noRoomError struct{ want int64 }

func (e *noRoomError) Error() string {
	return fmt.Sprintf("no room for %d bytes in the body budget", e.want)
}

// readBody reads ex's request body, of at most p.maxBody bytes, or fails
// with *http.MaxBytesError. A body of declared length has its room already;
// one of unknown length takes room as its bytes arrive, in steps taken only
// once a byte past the room has come, at once or not at all: a request
// holding room never waits for more (*noRoomError when a step finds no
// room; see BodyBudget).
func (p *Proxy) readBody(r *http.Request, ex *exchange) ([]byte, error) {
	limit := p.maxBody
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if r.ContentLength >= 0 {
		// net/http's body ends after ContentLength bytes: read exactly that.
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		return buf, nil
	}
	// The room held covers the buffer (the first step was taken by hold).
	// A full buffer takes its next step only once one more byte has come:
	// a body that ends exactly at a step, or at the limit, needs no more.
	buf := make([]byte, 0, min(bodyStep, limit))
	var one [1]byte
	for {
		if len(buf) == cap(buf) {
			n, err := r.Body.Read(one[:])
			if n == 0 {
				if err == io.EOF {
					return buf, nil
				}
				if err != nil {
					return nil, fmt.Errorf("read request body: %w", err)
				}
				continue
			}
			if int64(len(buf)) >= limit {
				return nil, &http.MaxBytesError{Limit: limit}
			}
			grow := min(int64(cap(buf)), limit-int64(cap(buf)))
			want := min(ex.held+grow, p.budget.Size())
			// A step is taken at once or not at all: a request holding
			// room never waits for more (BodyBudget).
			got, ok := p.budget.tryAcquire(ex.held, grow)
			if !ok {
				return nil, &noRoomError{want: want}
			}
			ex.held += got
			buf = append(append(make([]byte, 0, int64(cap(buf))+grow), buf...), one[0])
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return nil, fmt.Errorf("read request body: %w", err)
			}
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
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
	if ex.dialect == nil || res.StatusCode == http.StatusSwitchingProtocols {
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
	res.Body = ex.body
	return nil
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
	ex.failed = status
	if r.Context().Err() != nil {
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

// end reports the finished request. ctx is the client request's context:
// it is done only when the client went away (we are still in the handler).
func (p *Proxy) end(ctx context.Context, ex *exchange) {
	s := estimator.Span{
		ID: ex.id, Key: ex.key, Upstream: p.name, Model: ex.model, Tenant: ex.tenant,
		Start: ex.start, End: p.now(), Devices: ex.devices,
		PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
		UsageSource: estimator.UsageUnknown,
		Served:      ex.wrote.Load(),
	}
	gone := ctx.Err() != nil
	switch {
	case ex.body != nil:
		b := ex.body
		b.settle()
		b.watch.close()
		// A 4xx is the upstream refusing the request (bad input, no key,
		// rate limit): it did no generation, so it gets no share of a GPU.
		s.Served = ex.status < 400 || ex.status >= 500
		s.Status = strconv.Itoa(ex.status)
		ok := ex.status >= 200 && ex.status < 300
		switch {
		case b.eof:
			if ok && b.watch.failed {
				s.Status = estimator.StatusUpstreamError
				p.broken.fail(s.End, "request_id", ex.id, "status", ex.status, "err", "an error inside the answer")
			} else {
				p.broken.ok(s.End)
			}
		case b.err == nil || gone:
			// The copy stopped without a read error (a write to the client
			// failed), or the read failed because the client's context ended.
			s.Status = estimator.StatusClientClosed
		default:
			if ok {
				s.Status = estimator.StatusUpstreamError
			}
			p.broken.fail(s.End, "request_id", ex.id, "err", b.err)
		}
		s.FirstToken = b.watch.firstToken
		p.tokens(&s, ex, ok)
	case ex.failed != 0:
		s.Status = strconv.Itoa(ex.failed)
		// A body read past its deadline ends the client's context too:
		// the 408 was the proxy's answer, not the client leaving.
		if (gone || ex.cut) && ex.failed != http.StatusRequestTimeout {
			s.Status = estimator.StatusClientClosed
		}
	default: // ReverseProxy gave up before any hook ran
		s.Status = strconv.Itoa(http.StatusBadGateway)
		if gone {
			s.Status = estimator.StatusClientClosed
		}
	}
	if p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.Debug("request", "request_id", s.ID, "model", s.Model, "stream", ex.stream, "status", s.Status,
			"prompt_tokens", s.PromptTokens, "completion_tokens", s.CompletionTokens,
			"usage", s.UsageSource, "include_usage_added", ex.injected, "duration", s.End.Sub(s.Start))
	}
	p.rec.End(s)
}

// tokens fills in the span's token counts from what the watcher read: the
// upstream's own counts when it sent any, else counts from the response
// itself when it was a readable 2xx answer, else unknown.
func (p *Proxy) tokens(s *estimator.Span, ex *exchange, ok bool) {
	bw := ex.body.watch
	switch {
	case bw.hasUsage:
		u := bw.usage
		s.PromptTokens, s.CompletionTokens = u.Prompt, u.Completion
		s.CachedTokens, s.ReasoningTokens = u.Cached, u.Reasoning
		s.UsageSource = estimator.UsageReported
		if bw.failed || (!bw.done && !ex.body.eof) {
			s.UsageSource = estimator.UsageReportedPartial
		}
	case !ok || bw.framing == framingNone || (bw.framing == framingJSON && bw.failed):
		return
	default:
		s.PromptTokens = estimate(ex.dialect.PromptText(ex.reqBody))
		if bw.framing == framingJSON {
			s.CompletionTokens = estimate(bw.text)
		} else {
			s.CompletionTokens = bw.tokens
		}
		if s.PromptTokens < 0 && s.CompletionTokens < 0 {
			return
		}
		s.UsageSource = estimator.UsageEstimated
	}
	if ex.dialect.Embeddings && s.CompletionTokens < 0 {
		s.CompletionTokens = 0 // embeddings generate nothing: known, not missing
	}
}

// estimate is a token count from a length of text in bytes: a quarter of
// it, rounded up (about right for English under the common tokenizers);
// -1 for an unknown or empty length.
func estimate(textBytes int64) int64 {
	if textBytes <= 0 {
		return -1
	}
	return (textBytes + 3) / 4
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
