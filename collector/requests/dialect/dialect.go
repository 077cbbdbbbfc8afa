package dialect

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Usage is what a response says a request cost; -1 is unknown.
type Usage struct {
	Prompt, Completion, Cached, Reasoning int64
	// Invalid: the report had a count over MaxTokens. Such a report is a
	// fault of the server's (or of what stands between), not a count: its
	// counts read as unknown, and the request's usage is invalid whatever
	// else it reports.
	Invalid bool
}

// MaxTokens is the largest token count taken from an upstream: 2^40, about
// a million times the longest context of any model. A larger count (an
// overflow, a sign error, a garbled field) makes the report Invalid. Bounding
// each count also keeps sums of counts (llama.cpp's prompt_n + cache_n) from
// overflowing.
const MaxTokens = 1 << 40

// NoUsage is a Usage with every count unknown.
var NoUsage = Usage{Prompt: -1, Completion: -1, Cached: -1, Reasoning: -1}

// checked is u, or NoUsage marked Invalid when u is invalid or a count of
// u is over MaxTokens.
func (u Usage) checked() Usage {
	if u.Invalid || max(u.Prompt, u.Completion, u.Cached, u.Reasoning) > MaxTokens {
		v := NoUsage
		v.Invalid = true
		return v
	}
	return u
}

// Merge sets the counts of v that are known: a later report wins, count by
// count, and a report that leaves a count out keeps the earlier one. An
// invalid report makes u invalid for good.
func (u *Usage) Merge(v Usage) {
	u.Invalid = u.Invalid || v.Invalid
	for _, p := range [...]struct {
		dst *int64
		src int64
	}{
		{&u.Prompt, v.Prompt}, {&u.Completion, v.Completion}, {&u.Cached, v.Cached}, {&u.Reasoning, v.Reasoning},
	} {
		if p.src >= 0 {
			*p.dst = p.src
		}
	}
}

var errNotJSON = errors.New("not a JSON document")

// Doc is what one JSON document of a response says: a whole non-streamed
// body, one SSE event's data or one NDJSON line.
type Doc struct {
	Usage    Usage
	HasUsage bool
	// Tokens is the number of generated tokens the document carries (a
	// streamed event: usually 0 or 1); Text the bytes of generated text in it.
	Tokens, Text int64
	Final        bool // the dialect's own end of a stream (done:true, stop:true, TGI's details)
	Failed       bool // an error object
	UsageOnly    bool // OpenAI: a chunk with usage and no choices
}

// Request is what the proxy reads from a request body.
type Request struct {
	Model  string
	Stream bool
	// Asked: a streamed OpenAI request that asked for usage itself.
	Asked bool
}

// A Dialect knows where one family of inference APIs keeps the model, the
// stream flag and the token counts.
type Dialect struct {
	Name string
	// Request reads a request body. A body it cannot read gives the zero
	// Request: the upstream will refuse it itself.
	Request func(body []byte) Request
	// PromptText is the bytes of prompt text in a request body, -1 when it
	// cannot be read: the ground for an estimate of the prompt tokens.
	PromptText func(body []byte) int64
	// Document reads one JSON document of a response.
	Document func(b []byte) Doc
	// Header reads token counts from response headers (TGI), or is nil.
	Header func(h http.Header) (Usage, bool)
	// UsageKey is the key of an object-valued usage block, so that the tail
	// of a body too large to read whole can still be searched for it (see
	// TailUsage); empty when the dialect has none.
	UsageKey string
	// IncludeUsage: streamed requests may be given
	// stream_options.include_usage (OpenAI chat and text completions).
	IncludeUsage bool
	// Embeddings generate nothing: the completion count is 0, not unknown.
	Embeddings bool
}

// An Endpoint is one metered path.
type Endpoint struct {
	Method  string
	Dialect *Dialect
}

// Endpoints is the table of metered paths. Every other path is forwarded
// without being recorded.
func Endpoints() map[string]Endpoint {
	openAI := &Dialect{Name: "openai", Request: openAIRequest, PromptText: openAIPrompt, Document: openAIDocument,
		UsageKey: "usage", IncludeUsage: true}
	embed := &Dialect{Name: "openai-embeddings", Request: openAIRequest, PromptText: openAIPrompt, Document: openAIDocument,
		UsageKey: "usage", Embeddings: true}
	ollama := &Dialect{Name: "ollama", Request: ollamaRequest, PromptText: ollamaPrompt, Document: ollamaDocument}
	tgi := &Dialect{Name: "tgi", Request: tgiRequest(false), PromptText: tgiPrompt, Document: tgiDocument, Header: tgiHeader}
	tgiStream := &Dialect{Name: "tgi", Request: tgiRequest(true), PromptText: tgiPrompt, Document: tgiDocument, Header: tgiHeader}
	llama := &Dialect{Name: "llamacpp", Request: llamaRequest, PromptText: llamaPrompt, Document: llamaDocument, UsageKey: "timings"}
	return map[string]Endpoint{
		"/v1/chat/completions": {Method: "POST", Dialect: openAI},
		"/v1/completions":      {Method: "POST", Dialect: openAI},
		"/v1/embeddings":       {Method: "POST", Dialect: embed},
		"/api/chat":            {Method: "POST", Dialect: ollama},
		"/api/generate":        {Method: "POST", Dialect: ollama},
		"/generate":            {Method: "POST", Dialect: tgi},
		"/generate_stream":     {Method: "POST", Dialect: tgiStream},
		"/completion":          {Method: "POST", Dialect: llama},
	}
}

// TailUsage finds the usage block in t, the end of a body too large to keep
// whole; ok is false when there is none, or the dialect has no UsageKey.
// An unescaped key followed by a colon can only be a key (inside a JSON
// string its quotes would be escaped), and servers write usage after the
// choices, so the last such key whose value is an object is the one.
func (d *Dialect) TailUsage(t []byte) (Usage, bool) {
	if d.UsageKey == "" {
		return Usage{}, false
	}
	key := []byte(`"` + d.UsageKey + `"`) // e.g. `"usage"`
	for end := len(t); ; {
		i := bytes.LastIndex(t[:end], key)
		if i < 0 {
			return Usage{}, false
		}
		end = i
		rest := bytes.TrimLeft(t[i+len(key):], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		var obj json.RawMessage
		if json.NewDecoder(bytes.NewReader(rest[1:])).Decode(&obj) != nil || obj[0] != '{' {
			continue
		}
		doc := make([]byte, 0, len(key)+len(obj)+3)
		doc = append(append(append(append(doc, '{'), key...), ':'), obj...)
		if dd := d.Document(append(doc, '}')); dd.HasUsage {
			return dd.Usage, true
		}
	}
}

// ---- shared readers

// tokens is a reported token count: -1 when it is not a whole number >= 0.
// (With a plain *int64, encoding/json would leave a zero behind for a value
// of the wrong type, and an unknown count must never read as zero.)
type tokens int64

func (n *tokens) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v < 0 {
		v = -1
	}
	*n = tokens(v)
	return nil
}

// count is a token count, -1 when absent.
func count(n *tokens) int64 {
	if n == nil {
		return -1
	}
	return int64(*n)
}

// llamaTimings is llama.cpp's timings object, in its native answers and,
// from llama-server, in OpenAI-style answers and chunks beside (or without)
// their usage.
type llamaTimings struct {
	PromptN    *tokens `json:"prompt_n"`
	PredictedN *tokens `json:"predicted_n"`
	CacheN     *tokens `json:"cache_n"`
}

// timingsUsage is what timings say: prompt_n counts only the prompt tokens
// not found in the cache, cache_n those that were, so the prompt is known
// only with both. Counts over MaxTokens are kept over it (never summed) for
// checked to find.
func timingsUsage(promptN, predictedN, cacheN int64) Usage {
	u := NoUsage
	if promptN >= 0 && cacheN >= 0 {
		u.Prompt = max(promptN, cacheN)
		if u.Prompt <= MaxTokens {
			u.Prompt = promptN + cacheN
		}
	}
	u.Completion, u.Cached = predictedN, cacheN
	return u
}

func (t *llamaTimings) usage() Usage {
	return timingsUsage(count(t.PromptN), count(t.PredictedN), count(t.CacheN))
}

// unmarshal is json.Unmarshal that keeps what it could read when a field
// has an unexpected type (servers differ), and fails only on broken JSON.
func unmarshal(doc []byte, v any) error {
	err := json.Unmarshal(doc, v)
	if _, typeOnly := errors.AsType[*json.UnmarshalTypeError](err); err != nil && !typeOnly {
		return errNotJSON
	}
	return nil
}

// prefixModel is the model named by a request body that unmarshal cannot
// read, when it begins with a whole JSON object (trailing bytes after it, a
// second document): whether the upstream accepts such a body or not, its
// span keeps the model. Only the model: what else the proxy reads of a
// request (stream, stream_options) decides its edits, which a body that is
// not one JSON document never gets.
func prefixModel(body []byte) string {
	var req struct {
		Model string `json:"model"`
	}
	err := json.NewDecoder(bytes.NewReader(body)).Decode(&req)
	if _, typeOnly := errors.AsType[*json.UnmarshalTypeError](err); err != nil && !typeOnly {
		return ""
	}
	return req.Model
}

// textLen measures a JSON value without keeping it: the bytes inside a
// string's quotes (escapes counted as written), the bytes inside a non-empty
// array or object, 0 for null, "", [] and {}, and the length of any other
// value.
type textLen int64

func (t *textLen) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0, bytes.Equal(b, []byte("null")):
		*t = 0
	case b[0] == '"':
		*t = textLen(max(len(b)-2, 0))
	case b[0] == '[' || b[0] == '{':
		*t = textLen(len(bytes.TrimSpace(b[1 : len(b)-1])))
	default:
		*t = textLen(len(b))
	}
	return nil
}

// textBytes is the length of the text of a prompt or message content: a
// string, an array of strings, or an array of content parts with a "text"
// member. Other values (token ids, images) count 0.
func textBytes(raw json.RawMessage) int64 {
	if len(raw) == 0 {
		return 0
	}
	var s textLen
	if raw[0] == '"' {
		_ = s.UnmarshalJSON(raw)
		return int64(s)
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return 0
	}
	var n int64
	for _, p := range parts {
		if len(p) > 0 && p[0] == '"' {
			_ = s.UnmarshalJSON(p)
			n += int64(s)
			continue
		}
		var part struct {
			Text textLen `json:"text"`
		}
		if json.Unmarshal(p, &part) == nil {
			n += int64(part.Text)
		}
	}
	return n
}
