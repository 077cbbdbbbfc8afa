// Package requests is the request side of deadlabour: a metering reverse
// proxy (Proxy) that stands in front of one inference server, forwards
// everything unchanged, and reports one estimator.Span per inference
// request to a Recorder; and the event API (Events, POST /v1/requests),
// through which servers that cannot be put behind the proxy report their
// requests themselves.
//
// The proxy is transparent: every path, method, header, status and body goes
// through as it came, streams event by event. Only the inference paths of
// the dialect table (dialect.Endpoints) are metered; for those it reads the
// request's model, and the response's usage block and first token as they
// pass (bodyWatcher), holding a bounded number of bytes whatever the size of
// the body. How a body is read is package dialect's; this package does the
// I/O.
//
// include_usage: a streamed OpenAI-style request that did not ask for usage
// is sent with stream_options.include_usage set (unless NoIncludeUsage), and
// the stream is edited back (see usageFilter) so that the client sees what
// it would have seen without the proxy. Such a request is sent with
// Accept-Encoding: identity, since the proxy must read and edit its stream.
//
// Compression: other metered responses pass as the upstream encoded them;
// gzip and deflate bodies are watched through a decompressing copy on the
// side; any other coding leaves the request's usage unknown.
//
// What a proxied request's span says is on Recorder; the records made of
// spans are described in docs/schema.md.
package requests
