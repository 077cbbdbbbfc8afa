package requests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/clip"
)

// exchange is what the proxy knows about one request, shared by its hooks
// through the request's context.
type exchange struct {
	id      string           // the client's X-Request-Id, or one made up
	key     string           // unique per request (Span.Key)
	trace   traceContext     // the W3C trace the request belongs to (traceparent.go)
	dialect *dialect.Dialect // nil: not metered

	start    time.Time
	model    string
	stream   bool   // the client asked for a stream
	injected bool   // the proxy added stream_options.include_usage
	reqBody  []byte // the body sent upstream, include_usage added or not: for a prompt estimate
	tenant   string

	devices []string // the GPUs, fixed when the request begins
	held    int64    // bytes of the body budget held

	wrote atomic.Bool // the request reached the upstream whole (set on the transport's goroutine)
	// traced: the client trace below runs, so reused and answered say
	// whether the upstream connection was a kept-alive one and whether a
	// byte of the response came (for the retry, retry.go).
	traced, reused, answered atomic.Bool
	status                   int          // the upstream's status code
	body                     *watchedBody // the upstream's response body
	failed                   int          // status the proxy answered with itself
	proxied                  bool         // failed is the answer to the upstream's failure (errorHandler)
	cut                      bool         // the client went away while sending its request, or before the upstream answered
	w                        *flushLock   // what ReverseProxy writes the response to
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// ServeHTTP forwards one request, metering it when its path is an inference path.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lw := &flushLock{ResponseWriter: w}
	ex := &exchange{id: requestID(r.Header.Get(requestIDHeader)), w: lw}
	if ep, ok := p.endpoints[r.URL.Path]; ok && ep.Method == r.Method {
		ex.dialect = ep.Dialect
	}
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	if ex.dialect == nil {
		p.rp.ServeHTTP(lw, r.WithContext(ctx))
		return
	}

	ex.trace = traceOf(r.Header)
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
	ex.model, ex.stream = clip.String(req.Model, maxModel), req.Stream
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
	p.rec.Begin(estimator.Span{ID: ex.id, Key: ex.key, TraceID: ex.trace.id, Upstream: p.name, Model: ex.model, Tenant: ex.tenant, Start: ex.start, Devices: ex.devices})

	ex.traced.Store(true)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { ex.reused.Store(i.Reused) },
		GotFirstResponseByte: func() { ex.answered.Store(true) },
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
	p.rp.ServeHTTP(lw, out)
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
