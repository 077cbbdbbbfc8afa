package requests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/deadlabour/deadlabour/estimator"
)

// Reading a body of events: strict JSON, each event checked and turned into
// a span, every refusal naming the field at fault (fieldError).

// eventIn is one event as it is sent. Pointers tell absent from zero.
type eventIn struct {
	Type             string            `json:"type"`
	ID               string            `json:"id"`
	Upstream         string            `json:"upstream"`
	Model            string            `json:"model"`
	Tenant           string            `json:"tenant"`
	GPUs             []json.RawMessage `json:"gpus"`
	Start            *time.Time        `json:"start"`
	FirstToken       *time.Time        `json:"first_token"`
	End              *time.Time        `json:"end"`
	Status           json.RawMessage   `json:"status"`
	PromptTokens     *int64            `json:"prompt_tokens"`
	CompletionTokens *int64            `json:"completion_tokens"`
	CachedTokens     *int64            `json:"cached_tokens"`
	ReasoningTokens  *int64            `json:"reasoning_tokens"`
	UsageSource      string            `json:"usage_source"`
	Served           *bool             `json:"served"`
}

// event is a checked event.
type event struct {
	kind string // begin, end, span
	span estimator.Span
	gpus []string
	// hasStart: the event gave a start (an end may leave it to its begin).
	hasStart bool
}

// fieldError is a refusal naming a field.
type fieldError struct {
	status int
	field  string
	msg    string
}

func (e *fieldError) Error() string {
	if e.field == "" {
		return e.msg
	}
	return e.field + ": " + e.msg
}

func refuse(status int, field, format string, args ...any) *fieldError {
	return &fieldError{status: status, field: field, msg: fmt.Sprintf(format, args...)}
}

var upstreamRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Bounds of an event's values, beyond those of ident.go (id, model,
// tenant) and maxUpstream. Every string an event may carry is far within
// InfluxDB's 64 KiB for a tag value, a string field and a series key, so a
// body answered 202 is one the sink can write.
const (
	// MaxEventTokens bounds each token count: 2^40, about 10^12, more
	// than any request, and exact in the float64 of the arithmetic.
	MaxEventTokens = 1 << 40
	// MaxEventGPUs bounds an event's gpus list as sent (duplicates
	// included): more GPUs and MIG instances than a node has. The list is
	// deduplicated, and the device map refuses a GPU not on the node.
	MaxEventGPUs = 128
	// maxGPUName bounds a GPU named by UUID ("GPU-" or "MIG-" and 36
	// characters; older MIG names are longer).
	maxGPUName = 96
)

// decodeEvents reads a body: one event or an array of at most maxEvents,
// each checked against the clock now and the history kept.
// batch says whether it was an array (eventPrefix).
func decodeEvents(body []byte, now time.Time, history time.Duration, maxEvents int) (_ []event, batch bool, _ *fieldError) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, batch, refuse(http.StatusBadRequest, "", "empty body: want an event object or an array of them")
	}
	var raws []json.RawMessage
	if batch = body[0] == '['; batch {
		if err := strict(body, &raws); err != nil {
			return nil, batch, jsonError("", err)
		}
		if len(raws) == 0 {
			return nil, batch, refuse(http.StatusBadRequest, "", "empty array: want at least one event")
		}
		if len(raws) > maxEvents {
			return nil, batch, refuse(http.StatusRequestEntityTooLarge, "", "%d events in one batch; at most %d", len(raws), maxEvents)
		}
	} else {
		raws = []json.RawMessage{body}
	}
	out := make([]event, 0, len(raws))
	for i, raw := range raws {
		if string(raw) == "null" {
			// strict would take null as an empty event and name its id.
			if !batch {
				return nil, batch, refuse(http.StatusUnprocessableEntity, "", "the body is null: want an event object or an array of them")
			}
			return nil, batch, refuse(http.StatusUnprocessableEntity, eventName(eventPrefix(batch, i)), "null: want an event object")
		}
		var in eventIn
		if err := strict(raw, &in); err != nil {
			return nil, batch, jsonError(eventPrefix(batch, i), err)
		}
		ev, ferr := in.check(now, history)
		if ferr != nil {
			ferr.field = eventPrefix(batch, i) + ferr.field
			return nil, batch, ferr
		}
		out = append(out, ev)
	}
	return out, batch, nil
}

// strict decodes one JSON value with no unknown fields and nothing after it.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// eventPrefix is how the fields of event i are named in an answer: "[i]."
// in a batch, nothing for a single event.
func eventPrefix(batch bool, i int) string {
	if !batch {
		return ""
	}
	return "[" + strconv.Itoa(i) + "]."
}

// jsonError turns a decoding error into a refusal naming the field.
func jsonError(prefix string, err error) *fieldError {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		what := te.Value
		if n, ok := strings.CutPrefix(what, "number "); ok && tokenField(te.Field) && wholeNumber(n) {
			// A whole number beyond int64: out of range, not of the wrong type.
			return refuse(http.StatusUnprocessableEntity, prefix+te.Field, "%s is more than %d (2^40)", n, MaxEventTokens)
		}
		if te.Field == "" {
			return refuse(http.StatusBadRequest, eventName(prefix), "want an event object, got a JSON %s", what)
		}
		return refuse(http.StatusBadRequest, prefix+te.Field, "wrong type: JSON %s", what)
	}
	var pe *time.ParseError
	if errors.As(err, &pe) {
		return refuse(http.StatusBadRequest, eventName(prefix), "a timestamp is not RFC 3339 (e.g. 2025-01-02T15:04:05.123Z): %q", pe.Value)
	}
	msg := err.Error()
	if f, ok := cutQuoted(msg, `json: unknown field "`); ok {
		return refuse(http.StatusBadRequest, prefix+f, "unknown field")
	}
	return refuse(http.StatusBadRequest, eventName(prefix), "not valid JSON: %s", msg)
}

func tokenField(f string) bool {
	switch f {
	case "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens":
		return true
	}
	return false
}

func wholeNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// eventName is a prefix without its trailing dot, naming the event itself.
func eventName(prefix string) string {
	if prefix == "" {
		return ""
	}
	return prefix[:len(prefix)-1]
}

func cutQuoted(s, lead string) (string, bool) {
	i := bytes.Index([]byte(s), []byte(lead))
	if i < 0 {
		return "", false
	}
	rest := s[i+len(lead):]
	j := bytes.IndexByte([]byte(rest), '"')
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// check validates one event and turns it into a span.
func (in *eventIn) check(now time.Time, history time.Duration) (event, *fieldError) {
	ev := event{kind: in.Type}
	if ev.kind == "" {
		ev.kind = "span"
	}
	bad := http.StatusUnprocessableEntity
	switch ev.kind {
	case "begin", "end", "span":
	default:
		return ev, refuse(bad, "type", "%q: want begin, end or span", in.Type)
	}
	if !visible(in.ID, maxRequestID) {
		return ev, refuse(bad, "id", "want 1 to %d bytes of visible ASCII", maxRequestID)
	}
	if len(in.Upstream) > maxUpstream || !upstreamRe.MatchString(in.Upstream) {
		return ev, refuse(bad, "upstream", "want a name of letters, digits, '.', '_' and '-' (at most %d bytes)", maxUpstream)
	}
	if len(in.Model) > maxModel || !utf8.ValidString(in.Model) {
		return ev, refuse(bad, "model", "want at most %d bytes of UTF-8", maxModel)
	}
	if in.Tenant != "" && !visible(in.Tenant, maxTenant) {
		return ev, refuse(bad, "tenant", "want at most %d bytes of visible ASCII", maxTenant)
	}
	if len(in.GPUs) > MaxEventGPUs {
		return ev, refuse(bad, "gpus", "%d entries; at most %d", len(in.GPUs), MaxEventGPUs)
	}
	for i, g := range in.GPUs {
		var s string
		var n int64
		switch {
		case json.Unmarshal(g, &s) == nil && visible(s, maxGPUName):
		case json.Unmarshal(g, &n) == nil && n >= 0 && n < MaxEventGPUs:
			s = strconv.FormatInt(n, 10)
		default:
			return ev, refuse(bad, fmt.Sprintf("gpus[%d]", i), "want a GPU index (0 to %d) or a UUID string (at most %d bytes of visible ASCII)",
				MaxEventGPUs-1, maxGPUName)
		}
		ev.gpus = append(ev.gpus, s)
	}
	ev.gpus = uniq(ev.gpus) // a GPU named twice is charged once

	// Times: not in the future, not older than the history kept.
	oldest, newest := now.Add(-history), now.Add(futureSlack)
	for _, t := range []struct {
		name string
		v    *time.Time
	}{{"start", in.Start}, {"first_token", in.FirstToken}, {"end", in.End}} {
		switch {
		case t.v == nil:
		case t.v.After(newest):
			return ev, refuse(bad, t.name, "%s is in the future (the daemon's clock reads %s)", t.v.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
		case t.v.Before(oldest):
			return ev, refuse(bad, t.name, "%s is older than the %s of meter history kept (attribution.history): no energy is left to attribute", t.v.Format(time.RFC3339Nano), history)
		}
	}
	s := estimator.Span{ID: in.ID, Upstream: in.Upstream, Model: in.Model, Tenant: in.Tenant,
		PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1, Status: "200"}
	if in.Start != nil {
		s.Start, ev.hasStart = *in.Start, true
	}
	if ev.kind == "begin" {
		switch {
		case in.Start == nil:
			return ev, refuse(bad, "start", "required")
		case in.End != nil || in.FirstToken != nil || len(in.Status) > 0 || in.Served != nil || in.UsageSource != "" ||
			in.PromptTokens != nil || in.CompletionTokens != nil || in.CachedTokens != nil || in.ReasoningTokens != nil:
			return ev, refuse(bad, "type", "a begin event has only id, upstream, model, tenant, gpus and start; the rest goes in its end event")
		}
		ev.span = s
		return ev, nil
	}
	switch {
	case in.End == nil:
		return ev, refuse(bad, "end", "required")
	case in.Start == nil && ev.kind == "span":
		return ev, refuse(bad, "start", "required")
	case in.Start != nil && in.End.Before(*in.Start):
		return ev, refuse(bad, "end", "before start")
	}
	s.End = *in.End
	if in.FirstToken != nil {
		if (in.Start != nil && in.FirstToken.Before(*in.Start)) || in.FirstToken.After(*in.End) {
			return ev, refuse(bad, "first_token", "want a time between start and end")
		}
		s.FirstToken = *in.FirstToken
	}
	if len(in.Status) > 0 {
		status, ok := parseStatus(in.Status)
		if !ok {
			return ev, refuse(bad, "status", "want an HTTP status code (100-599) or %q or %q", estimator.StatusClientClosed, estimator.StatusUpstreamError)
		}
		s.Status = status
	}
	counts := 0
	for _, c := range []struct {
		name string
		v    *int64
		dst  *int64
	}{{"prompt_tokens", in.PromptTokens, &s.PromptTokens}, {"completion_tokens", in.CompletionTokens, &s.CompletionTokens},
		{"cached_tokens", in.CachedTokens, &s.CachedTokens}, {"reasoning_tokens", in.ReasoningTokens, &s.ReasoningTokens}} {
		if c.v == nil {
			continue
		}
		if *c.v < 0 {
			return ev, refuse(bad, c.name, "want a whole number >= 0 (leave it out when unknown)")
		}
		if *c.v > MaxEventTokens {
			return ev, refuse(bad, c.name, "%d is more than %d (2^40)", *c.v, MaxEventTokens)
		}
		*c.dst = *c.v
		counts++
	}
	switch in.UsageSource {
	case "":
		s.UsageSource = estimator.UsageUnknown
		if counts > 0 {
			s.UsageSource = estimator.UsageReported
		}
	case estimator.UsageReported, estimator.UsageReportedPartial, estimator.UsageEstimated:
		if counts == 0 {
			return ev, refuse(bad, "usage_source", "%q with no token counts", in.UsageSource)
		}
		s.UsageSource = in.UsageSource
	case estimator.UsageUnknown:
		if counts > 0 {
			return ev, refuse(bad, "usage_source", "unknown, yet token counts are given")
		}
		s.UsageSource = in.UsageSource
	default:
		return ev, refuse(bad, "usage_source", "%q: want reported, reported_partial, estimated or unknown", in.UsageSource)
	}
	// As the proxy judges it: a 4xx is a request the server refused.
	code, _ := strconv.Atoi(s.Status)
	s.Served = code < 400 || code >= 500
	if in.Served != nil {
		s.Served = *in.Served
	}
	ev.span = s
	return ev, nil
}

func parseStatus(raw json.RawMessage) (string, bool) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return strconv.Itoa(n), n >= 100 && n <= 599
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && (s == estimator.StatusClientClosed || s == estimator.StatusUpstreamError) {
		return s, true
	}
	return "", false
}
