package requests

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/deadlabour/deadlabour/estimator"
)

// end reports the finished request. ctx is the client request's context:
// it is done only when the client went away (we are still in the handler).
func (p *Proxy) end(ctx context.Context, ex *exchange) {
	s := estimator.Span{
		ID: ex.id, Key: ex.key, TraceID: ex.trace.id, Upstream: p.name, Model: ex.model, Tenant: ex.tenant,
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
		case b.eof || b.ended:
			// Read to its end, or its end marker reached the client: a
			// client that hangs up then, or an upstream that fails to end
			// its HTTP response after it, leaves the answer whole.
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
		// the 408 was the proxy's answer, not the client leaving; so was a
		// 502 or 504 to the upstream's failure (errorHandler sets cut when
		// the failure was the client's leaving).
		if ex.cut || (gone && !ex.proxied && ex.failed != http.StatusRequestTimeout) {
			s.Status = estimator.StatusClientClosed
		}
	default: // ReverseProxy gave up before any hook ran
		s.Status = statusBadGateway
		if gone {
			s.Status = estimator.StatusClientClosed
		}
	}
	if ex.body == nil && s.Status == statusBadGateway {
		// The proxy's 502: the upstream sent nothing, a connection refused
		// or dropped with no answer (a kept-alive one it had closed is tried
		// again first). No GPU time is charged to it (docs/schema.md), even
		// where the request had been written.
		s.Served = false
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
	case bw.hasUsage && bw.usage.Invalid:
		// A count no request has: the server's report is broken, and an
		// estimate would pass for a count it never gave.
		s.UsageSource = estimator.UsageInvalid
		return
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

// statusBadGateway is the span status of the proxy's own 502.
var statusBadGateway = strconv.Itoa(http.StatusBadGateway)
