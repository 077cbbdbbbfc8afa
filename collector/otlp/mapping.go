package otlp

import (
	"math"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/deadlabour/deadlabour/estimator"
)

// Dialects: the span shapes the receiver reads (docs/schema.md, "Request
// sources: OpenTelemetry traces").
const (
	DialectVLLM   = "vllm"
	DialectSGLang = "sglang"
	DialectGenAI  = "genai"
)

// dialect is one span shape's mapping: the attributes each field of the
// request is read from (the first present wins). Latencies are in seconds.
type dialect struct {
	name                          string
	id, model, prompt, completion []string
	cached                        []string
	queue, ttft, prefill, e2e     string
}

// The mappings. Every attribute a mapping reads is named here; a span's
// other attributes (prompt and completion text among them:
// gen_ai.prompt, gen_ai.completion, gen_ai.input.messages,
// gen_ai.output.messages) and its events are never read.
var (
	// vLLM: the llm_request span (SERVER), vllm/tracing.py SpanAttributes,
	// set in vllm/v1/engine/output_processor.py do_tracing (v0:
	// vllm/engine/llm_engine.py). The span starts at the request's arrival;
	// time_in_queue is scheduled − queued, time_in_model_prefill is first
	// token − scheduled, time_to_first_token is first token − arrival.
	// gen_ai.request.id is "chatcmpl-<X-Request-Id>" for chat completions
	// and "cmpl-<X-Request-Id>" for completions
	// (vllm/entrypoints/openai/serving_chat.py, serving_completion.py,
	// _base_request_id in serving_engine.py: the X-Request-Id header, else
	// a random uuid; every release since 0.6). Releases with the v1
	// engine's unique internal ids report the external id
	// (req_state.external_req_id), the same form. Recent releases set no
	// gen_ai.response.model: Source.Model stands in.
	vllm = dialect{
		name:       DialectVLLM,
		id:         []string{"gen_ai.request.id"},
		model:      []string{"gen_ai.response.model"},
		prompt:     []string{"gen_ai.usage.prompt_tokens"},
		completion: []string{"gen_ai.usage.completion_tokens"},
		queue:      "gen_ai.latency.time_in_queue",
		ttft:       "gen_ai.latency.time_to_first_token",
		prefill:    "gen_ai.latency.time_in_model_prefill",
		e2e:        "gen_ai.latency.e2e",
	}
	// SGLang: the request's root span, named "<role> Req <rid[:8]>"
	// (INTERNAL), attributes rid and module "sglang::<module>" at its start
	// (python/sglang/srt/observability/trace.py trace_req_start), the
	// gen_ai.* ones at its end (tokenizer_manager's make_span_attrs and
	// python/sglang/srt/observability/req_time_stats.py
	// convert_to_gen_ai_span_attrs). The same gen_ai.latency.* names as
	// vLLM, measured differently: time_to_first_token and e2e from the
	// request's creation, time_in_model_prefill from its dispatch to the
	// scheduler (the scheduler's queue included), and time_in_queue is
	// declared but set by none of the releases read: the scheduling time
	// is known only where time_in_queue is present. Adds
	// gen_ai.usage.cached_tokens. In prefill/decode disaggregation each
	// role sends its own root span for one rid (Request.Key differs).
	sglang = func() dialect {
		d := vllm
		d.name = DialectSGLang
		d.id = []string{"gen_ai.request.id", "rid"}
		d.cached = []string{"gen_ai.usage.cached_tokens"}
		d.prefill = "" // from the dispatch, queue included: no scheduling time
		return d
	}()
	// OpenTelemetry GenAI semantic conventions (gen-ai-spans): a CLIENT or
	// SERVER span whose gen_ai.operation.name is an inference operation.
	// No phases: the first token is unknown. The deprecated
	// prompt_tokens/completion_tokens names are read where the new ones
	// are absent.
	genai = dialect{
		name:       DialectGenAI,
		id:         []string{"gen_ai.response.id"},
		model:      []string{"gen_ai.response.model", "gen_ai.request.model"},
		prompt:     []string{"gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"},
		completion: []string{"gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"},
		cached:     []string{"gen_ai.usage.cache_read.input_tokens"},
	}
)

// Attributes read to tell the shapes apart and for the status.
const (
	attrOperation  = "gen_ai.operation.name"
	attrModule     = "module" // SGLang: "sglang::<module>"
	attrRid        = "rid"    // SGLang
	attrHTTPStatus = "http.response.status_code"
	vllmSpanName   = "llm_request"
)

// genaiOperations are the gen_ai.operation.name values of inference.
var genaiOperations = map[string]bool{"chat": true, "text_completion": true, "generate_content": true, "embeddings": true}

// idPrefixes are taken off a request id to give the id a proxy sees
// (vLLM's chat and completion ids, OpenAI-style response ids).
var idPrefixes = []string{"chatcmpl-", "cmpl-"}

// slots numbers every attribute some mapping reads: one pass over a
// span's attributes fills a slot per name and skips every other attribute.
var slots = func() map[string]int {
	m := map[string]int{}
	add := func(names ...string) {
		for _, n := range names {
			if _, ok := m[n]; !ok && n != "" {
				m[n] = len(m)
			}
		}
	}
	for _, d := range []*dialect{&vllm, &sglang, &genai} {
		add(d.id...)
		add(d.model...)
		add(d.prompt...)
		add(d.completion...)
		add(d.cached...)
		add(d.queue, d.ttft, d.prefill, d.e2e)
	}
	add(attrOperation, attrModule, attrRid, attrHTTPStatus)
	if len(m) > maxSlots {
		panic("otlp: more attributes than slots")
	}
	return m
}()

const maxSlots = 32

// attrs is what one pass read of a span's attributes: strings and
// numbers of the named attributes only.
type attrs struct {
	kind [maxSlots]uint8 // kindNone, kindStr, kindInt, kindDouble
	str  [maxSlots]string
	num  [maxSlots]float64
}

const (
	kindNone uint8 = iota
	kindStr
	kindInt
	kindDouble
)

func (a *attrs) read(m pcommon.Map) {
	*a = attrs{}
	m.Range(func(k string, v pcommon.Value) bool {
		i, ok := slots[k]
		if !ok {
			return true
		}
		switch v.Type() {
		case pcommon.ValueTypeStr:
			a.kind[i], a.str[i] = kindStr, v.Str()
		case pcommon.ValueTypeInt:
			a.kind[i], a.num[i] = kindInt, float64(v.Int())
		case pcommon.ValueTypeDouble:
			a.kind[i], a.num[i] = kindDouble, v.Double()
		}
		return true
	})
}

func (a *attrs) str1(names []string) (string, bool) {
	for _, n := range names {
		if i := slots[n]; a.kind[i] == kindStr && a.str[i] != "" {
			return a.str[i], true
		}
	}
	return "", false
}

// tokens is the first count present among names, -1 when none is a
// non-negative whole number.
func (a *attrs) tokens(names []string) int64 {
	for _, n := range names {
		i := slots[n]
		if a.kind[i] != kindInt && a.kind[i] != kindDouble {
			continue
		}
		if v := a.num[i]; v >= 0 && v < 1<<53 && v == math.Trunc(v) {
			return int64(v)
		}
	}
	return -1
}

// seconds is a latency attribute as a duration; ok is false when it is
// absent, not a number, negative or absurd (a week or more).
func (a *attrs) seconds(name string) (time.Duration, bool) {
	if name == "" {
		return 0, false
	}
	i := slots[name]
	if a.kind[i] != kindInt && a.kind[i] != kindDouble {
		return 0, false
	}
	v := a.num[i]
	if !(v >= 0 && v < 7*24*3600) {
		return 0, false
	}
	return time.Duration(math.Round(v * 1e9)), true
}

// Reasons a span is not used; notInference is ignored, the others
// rejected.
const (
	notInference = "not an inference request"
	noSource     = "from a resource no source matches (service.name, service.instance.id, host.name)"
	noID         = "without a request id"
	badID        = "with a request id longer than 256 bytes or not printable"
	noTimes      = "without a start or an end time"
	backwards    = "ending before it starts"
)

// mapper maps the spans of one export request.
type mapper struct {
	now       time.Time
	lateAfter time.Duration
	a         attrs
}

// dialectOf tells which shape a span is, nil for a span that is no
// inference request.
func (m *mapper) dialectOf(sp ptrace.Span) *dialect {
	if sp.Name() == vllmSpanName {
		return &vllm
	}
	a := &m.a
	if i := slots[attrModule]; a.kind[i] == kindStr && strings.HasPrefix(a.str[i], "sglang::") {
		return &sglang
	}
	if a.kind[slots[attrRid]] != kindNone && a.kind[slots["gen_ai.request.id"]] != kindNone {
		return &sglang
	}
	if k := sp.Kind(); k == ptrace.SpanKindServer || k == ptrace.SpanKindClient {
		if i := slots[attrOperation]; a.kind[i] == kindStr && genaiOperations[a.str[i]] {
			return &genai
		}
	}
	return nil
}

// mapSpan maps one span of a resource whose source is src (nil: none
// matched). why is empty when req is to be used.
func (m *mapper) mapSpan(sp ptrace.Span, src *Source) (req Request, why string) {
	m.a.read(sp.Attributes())
	d := m.dialectOf(sp)
	if d == nil {
		return req, notInference
	}
	if src == nil {
		return req, noSource
	}
	a := &m.a
	raw, ok := a.str1(d.id)
	if !ok {
		return req, noID
	}
	if !sane(raw) {
		return req, badID
	}
	t0, t1 := int64(sp.StartTimestamp()), int64(sp.EndTimestamp())
	e2e, hasE2E := a.seconds(d.e2e)
	if t1 == 0 && t0 > 0 && hasE2E {
		t1 = t0 + int64(e2e)
	}
	if t0 <= 0 || t1 <= 0 {
		return req, noTimes
	}
	if t1 < t0 {
		return req, backwards
	}
	start, end := time.Unix(0, t0).UTC(), time.Unix(0, t1).UTC()
	s := estimator.Span{
		ID: stripPrefix(raw), Upstream: src.Upstream, Start: start, End: end,
		Status: "200", Devices: src.Devices, Served: true, UsageSource: estimator.UsageUnknown,
		PromptTokens: a.tokens(d.prompt), CompletionTokens: a.tokens(d.completion),
		CachedTokens: a.tokens(d.cached), ReasoningTokens: -1,
	}
	s.Model, _ = a.str1(d.model)
	if s.Model == "" {
		s.Model = src.Model
	}
	if s.PromptTokens >= 0 || s.CompletionTokens >= 0 {
		s.UsageSource = estimator.UsageTrace
	}
	if ttft, ok := a.seconds(d.ttft); ok && t0+int64(ttft) <= t1 {
		s.FirstToken = start.Add(ttft)
	}
	s.Scheduled = scheduled(a, d, start, s.FirstToken, end)
	if i := slots[attrHTTPStatus]; a.kind[i] == kindInt && a.num[i] >= 100 && a.num[i] <= 599 {
		s.Status = strconv.Itoa(int(a.num[i]))
	} else if sp.Status().Code() == ptrace.StatusCodeError {
		s.Status = StatusError
	}
	tid, sid := sp.TraceID(), sp.SpanID()
	req = Request{Span: s, RawID: raw, Dialect: d.name, TraceID: tid.String(), SpanID: sid.String(), Received: m.now}
	req.Key = "otlp/" + req.TraceID + "/" + req.SpanID
	req.Late = m.lateAfter > 0 && m.now.Sub(end) > m.lateAfter
	return req, ""
}

// StatusError is the status of a span whose status is ERROR and that says
// no HTTP status code: the server failed the request.
const StatusError = "500"

// scheduled is when the request left the server's queue: the first
// token less the prefill (vLLM), else the start plus the time in queue;
// zero when neither is known or it does not lie in [start, first token)
// ([start, end) without a first token).
func scheduled(a *attrs, d *dialect, start, first, end time.Time) time.Time {
	var at time.Time
	if p, ok := a.seconds(d.prefill); ok && !first.IsZero() {
		at = first.Add(-p)
		if at.Before(start) {
			at = start // the engine's clock and the arrival's differ a little
		}
	} else if q, ok := a.seconds(d.queue); ok {
		at = start.Add(q)
	} else {
		return time.Time{}
	}
	limit := end
	if !first.IsZero() {
		limit = first
	}
	if !at.Before(limit) {
		return time.Time{}
	}
	return at
}

// stripPrefix takes the server's prefix off a request id.
func stripPrefix(id string) string {
	for _, p := range idPrefixes {
		if rest, ok := strings.CutPrefix(id, p); ok && rest != "" {
			return rest
		}
	}
	return id
}

// sane: an id short enough and printable ASCII, as it is written out.
func sane(id string) bool {
	if len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

func stringAttr(m pcommon.Map, key string) string {
	if v, ok := m.Get(key); ok && v.Type() == pcommon.ValueTypeStr {
		return v.Str()
	}
	return ""
}
