// Package otlp receives the OpenTelemetry traces of inference servers
// (vLLM, SGLang, and anything that follows the OpenTelemetry GenAI
// semantic conventions) and turns each inference request's span into an
// estimator.Span: a third request source beside the proxy and the event
// API (collector/requests), and the only one that knows a request's
// phases — when it left the server's queue (Span.Scheduled), its first
// token, its end.
//
// A Receiver serves OTLP/HTTP (Handler: POST /v1/traces, protobuf or
// JSON, gzip or not) and OTLP/gRPC (RegisterGRPC on a server made with
// GRPCServerOptions), both behind an optional bearer token. Decoding is
// the OpenTelemetry collector's pdata (ptraceotlp). Each span is mapped by
// the first dialect it matches (mapping.go): vLLM's llm_request span,
// SGLang's request root span, or a GenAI-conventions CLIENT or SERVER
// span of an inference operation; every other span — HTTP server spans,
// other services' spans — is ignored and counted, never an error. The
// resource's service.name (and, where configured, service.instance.id
// and host.name) picks the Source, which names the upstream and its GPUs.
//
// An inference span that cannot be used (no request id, no times, a
// resource no source matches) is rejected: the export is answered with
// partial_success, rejected_spans and a message naming the reasons. The
// spans used go to the Recorder in one batch per export request, all or
// none: a recorder that is full (FullError) makes the exporter retry the
// whole batch later (HTTP 429 with Retry-After, gRPC UNAVAILABLE with
// RetryInfo).
//
// Privacy: spans may carry prompt and completion text (gen_ai.prompt,
// gen_ai.completion, gen_ai.input.messages, gen_ai.output.messages, span
// events). The mapping reads only the attributes named in its tables; no
// other attribute, no event and no span name is kept, logged or answered.
//
// docs/schema.md ("Request sources: OpenTelemetry traces") lists the
// mappings; docs/operations.md ("Metering from traces (OTLP)") shows how
// to point vLLM, SGLang and an OpenTelemetry Collector at the daemon.
package otlp
