package requests

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// retrying is the upstream transport, with one retry for a request written
// onto a kept-alive connection the upstream had already closed.
//
// llama-server closes its connection a few milliseconds after every stream,
// although its response says keep-alive. The transport puts the connection
// back in its pool meanwhile, and now and then writes the next request onto
// it just as it closes: the upstream never reads it, and the transport gets
// EOF or a reset with nothing answered ("http: server closed idle
// connection"). net/http retries such a request only when it deems it
// idempotent: GET and the like, or one with an Idempotency-Key or
// X-Idempotency-Key header (which a nil value keeps off the wire) and a
// GetBody. Inference requests are POSTs. Marking them idempotent would hand
// the decision to net/http's rules, which retry on another pooled connection
// (again and again while the pool holds closed ones) and after errors other
// than a closed connection; so the proxy retries itself, once, on a new
// connection that no pool lends, and only a failure that
//
//   - came on a reused connection (a new one failing is the upstream failing),
//   - before any byte of a response,
//   - is not a timeout (ResponseHeaderTimeout: the upstream had the request
//     and was slow) or the client's leaving,
//   - of a request whose body can be sent again (GetBody, or no body).
//
// What it cannot tell apart from a connection closed while idle: an upstream
// that read the request on a kept-alive connection and died before
// answering. Such a request is sent once more; the client's SDK would retry
// it the same way on the proxy's 502.
type retrying struct {
	pooled http.RoundTripper
	fresh  http.RoundTripper // a new connection for every request, never kept
	log    *slog.Logger
}

// newRetrying wraps rt. A retry goes out on a copy of rt that keeps no
// connection alive; a RoundTripper other than *http.Transport retries on
// itself.
func newRetrying(rt http.RoundTripper, log *slog.Logger) *retrying {
	fresh := rt
	if t, ok := rt.(*http.Transport); ok {
		c := t.Clone()
		c.DisableKeepAlives = true
		fresh = c
	}
	return &retrying{pooled: rt, fresh: fresh, log: log}
}

func (t *retrying) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeOf(req.Context())
	reused, answered := &atomic.Bool{}, &atomic.Bool{}
	if ex != nil && ex.traced.Load() {
		// A metered request: ServeHTTP's client trace records both.
		reused, answered = &ex.reused, &ex.answered
	} else {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn:              func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
			GotFirstResponseByte: func() { answered.Store(true) },
		}))
	}
	res, err := t.pooled.RoundTrip(req)
	if err == nil || !reused.Load() || answered.Load() || !retryable(req, err) {
		return res, err
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		retry.Body = body
	}
	id := ""
	if ex != nil {
		// The first try's write is over (the transport waits for its
		// writer before it reports a broken connection): only the
		// retry's counts.
		ex.wrote.Store(false)
		id = ex.id
	}
	t.log.Debug("upstream closed a kept-alive connection under a request: sent again on a new connection",
		"request_id", id, "err", err)
	return t.fresh.RoundTrip(retry)
}

// retryable: err is not the client's leaving or a timeout, and req's body
// can be sent again.
func retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil || !(req.Body == nil || req.Body == http.NoBody || req.GetBody != nil) {
		return false
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return false
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// CloseIdleConnections closes the pooled connections.
func (t *retrying) CloseIdleConnections() {
	for _, rt := range []http.RoundTripper{t.pooled, t.fresh} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}
