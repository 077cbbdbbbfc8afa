package requests

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/deadlabour/deadlabour/internal/jsonedit"
)

// usage is what a response says a request cost; -1 is unknown.
type usage struct {
	prompt, completion, cached, reasoning int64
}

var noUsage = usage{prompt: -1, completion: -1, cached: -1, reasoning: -1}

// merge sets the counts of v that are known: a later report wins, count by
// count, and a report that leaves a count out keeps the earlier one.
func (u *usage) merge(v usage) {
	for _, p := range [...]struct {
		dst *int64
		src int64
	}{
		{&u.prompt, v.prompt}, {&u.completion, v.completion}, {&u.cached, v.cached}, {&u.reasoning, v.reasoning},
	} {
		if p.src >= 0 {
			*p.dst = p.src
		}
	}
}

var errNotJSON = errors.New("not a JSON document")

// doc is what one JSON document of a response says: a whole non-streamed
// body, one SSE event's data or one NDJSON line.
type doc struct {
	usage    usage
	hasUsage bool
	// tokens is the number of generated tokens the document carries (a
	// streamed event: usually 0 or 1); text the bytes of generated text in it.
	tokens, text int64
	final        bool // the dialect's own end of a stream (done:true, stop:true, TGI's details)
	failed       bool // an error object
	usageOnly    bool // OpenAI: a chunk with usage and no choices
}

// request is what the proxy reads from a request body.
type request struct {
	model  string
	stream bool
	// asked: a streamed OpenAI request that asked for usage itself.
	asked bool
}

// A dialect knows where one family of inference APIs keeps the model, the
// stream flag and the token counts.
type dialect struct {
	name string
	// request reads a request body. A body it cannot read gives the zero
	// request: the upstream will refuse it itself.
	request func(body []byte) request
	// promptText is the bytes of prompt text in a request body, -1 when it
	// cannot be read: the ground for an estimate of the prompt tokens.
	promptText func(body []byte) int64
	// document reads one JSON document of a response.
	document func(b []byte) doc
	// header reads token counts from response headers (TGI), or is nil.
	header func(h http.Header) (usage, bool)
	// usageKey is the key of an object-valued usage block, so that the tail
	// of a body too large to read whole can still be searched for it; empty
	// when the dialect has none.
	usageKey string
	// includeUsage: streamed requests may be given
	// stream_options.include_usage (OpenAI chat and text completions).
	includeUsage bool
	// embeddings generate nothing: the completion count is 0, not unknown.
	embeddings bool
}

// An endpoint is one metered path.
type endpoint struct {
	method  string
	dialect *dialect
}

// endpoints is the table of metered paths. Every other path is forwarded
// without being recorded.
func endpoints() map[string]endpoint {
	openAI := &dialect{name: "openai", request: openAIRequest, promptText: openAIPrompt, document: openAIDocument,
		usageKey: "usage", includeUsage: true}
	embed := &dialect{name: "openai-embeddings", request: openAIRequest, promptText: openAIPrompt, document: openAIDocument,
		usageKey: "usage", embeddings: true}
	ollama := &dialect{name: "ollama", request: ollamaRequest, promptText: ollamaPrompt, document: ollamaDocument}
	tgi := &dialect{name: "tgi", request: tgiRequest(false), promptText: tgiPrompt, document: tgiDocument, header: tgiHeader}
	tgiStream := &dialect{name: "tgi", request: tgiRequest(true), promptText: tgiPrompt, document: tgiDocument, header: tgiHeader}
	llama := &dialect{name: "llamacpp", request: llamaRequest, promptText: llamaPrompt, document: llamaDocument, usageKey: "timings"}
	return map[string]endpoint{
		"/v1/chat/completions": {method: "POST", dialect: openAI},
		"/v1/completions":      {method: "POST", dialect: openAI},
		"/v1/embeddings":       {method: "POST", dialect: embed},
		"/api/chat":            {method: "POST", dialect: ollama},
		"/api/generate":        {method: "POST", dialect: ollama},
		"/generate":            {method: "POST", dialect: tgi},
		"/generate_stream":     {method: "POST", dialect: tgiStream},
		"/completion":          {method: "POST", dialect: llama},
	}
}

// ---- OpenAI-compatible: vLLM, SGLang, TGI's /v1, llama.cpp's /v1, Ollama's /v1

func openAIRequest(body []byte) request {
	if r, ok := fastOpenAIRequest(body); ok {
		return r
	}
	return openAIRequestJSON(body)
}

// openAIRequestJSON is openAIRequest through encoding/json, for what
// fastOpenAIRequest does not read.
func openAIRequestJSON(body []byte) request {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := unmarshal(body, &req); err != nil {
		return request{}
	}
	return request{model: req.Model, stream: req.Stream, asked: askedUsage(body)}
}

// askedUsage is whether an OpenAI request asks for usage itself. With
// duplicate stream_options members the last one counts, whole, as the
// upstream's decoder reads it (encoding/json would merge the objects:
// {"stream_options":{"include_usage":true},"stream_options":{}} asks for
// nothing).
func askedUsage(body []byte) bool {
	members, _, ok := jsonedit.Members(body, 0)
	if !ok {
		return false
	}
	m, ok := jsonedit.Find(body, members, "stream_options")
	if !ok {
		return false
	}
	var so *struct {
		IncludeUsage         bool `json:"include_usage"`
		ContinuousUsageStats bool `json:"continuous_usage_stats"` // vLLM
	}
	if unmarshal(body[m.Val[0]:m.Val[1]], &so) != nil {
		return false
	}
	return so != nil && (so.IncludeUsage || so.ContinuousUsageStats)
}

func openAIPrompt(body []byte) int64 {
	var req struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Prompt json.RawMessage `json:"prompt"`
		Input  json.RawMessage `json:"input"` // embeddings
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	n := textBytes(req.Prompt) + textBytes(req.Input)
	for _, m := range req.Messages {
		n += textBytes(m.Content)
	}
	return n
}

// openAIDoc is the part of an OpenAI response or chunk the proxy reads.
// Generated text is never copied out: textLen only measures it.
type openAIDoc struct {
	Usage *struct {
		PromptTokens        *tokens `json:"prompt_tokens"`
		CompletionTokens    *tokens `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens *tokens `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails *struct {
			ReasoningTokens *tokens `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
	Choices *[]struct {
		Text    textLen   `json:"text"` // completions
		Message openAIMsg `json:"message"`
		Delta   openAIMsg `json:"delta"`
	} `json:"choices"`
	Error  textLen `json:"error"`
	Object string  `json:"object"` // "error" in vLLM's older error chunks
}

type openAIMsg struct {
	Content          textLen `json:"content"`
	ReasoningContent textLen `json:"reasoning_content"` // vLLM, DeepSeek
	Reasoning        textLen `json:"reasoning"`         // vLLM >= 0.10, Ollama
	ToolCalls        textLen `json:"tool_calls"`
}

func (m openAIMsg) len() int64 {
	return int64(m.Content + m.ReasoningContent + m.Reasoning + m.ToolCalls)
}

// openAIRead is what an OpenAI answer or chunk says, as read by
// fastOpenAIDocument or through openAIDoc.
type openAIRead struct {
	failed       bool  // a non-empty error member, or object "error"
	choices      int   // how many; -1 for no choices member (or null)
	text, tokens int64 // generated text, and choices with some
	hasUsage     bool  // the usage member is an object
	usage        usage // its counts
}

func openAIDocument(b []byte) doc {
	r, ok := fastOpenAIDocument(b)
	if !ok {
		if r, ok = openAIReadJSON(b); !ok {
			return doc{}
		}
	}
	out := doc{failed: r.failed, text: r.text, tokens: r.tokens}
	// encoding/json matches keys whatever their case (and through \u
	// escapes); servers write "usage". Requiring that exact key keeps a
	// body's tail search and a whole document in agreement.
	if !r.hasUsage || !bytes.Contains(b, []byte(`"usage"`)) {
		return out
	}
	if r.usage.prompt < 0 && r.usage.completion < 0 {
		return out // a usage block with nothing readable in it
	}
	out.usage, out.hasUsage = r.usage, true
	out.usageOnly = r.choices <= 0
	return out
}

// openAIReadJSON reads a document through encoding/json, for what
// fastOpenAIDocument does not read; ok is false for one that is not JSON.
func openAIReadJSON(b []byte) (openAIRead, bool) {
	var d openAIDoc
	if err := unmarshal(b, &d); err != nil {
		return openAIRead{}, false
	}
	r := openAIRead{failed: d.Error > 0 || d.Object == "error", choices: -1, usage: noUsage}
	if d.Choices != nil {
		r.choices = len(*d.Choices)
		for _, c := range *d.Choices {
			n := int64(c.Text) + c.Message.len() + c.Delta.len()
			r.text += n
			if n > 0 {
				r.tokens++ // one choice's step: one token
			}
		}
	}
	if u := d.Usage; u != nil {
		r.hasUsage = true
		r.usage.prompt, r.usage.completion = count(u.PromptTokens), count(u.CompletionTokens)
		if u.PromptTokensDetails != nil {
			r.usage.cached = count(u.PromptTokensDetails.CachedTokens)
		}
		if u.CompletionTokensDetails != nil {
			r.usage.reasoning = count(u.CompletionTokensDetails.ReasoningTokens)
		}
	}
	return r, true
}

// ---- Ollama's native API: /api/chat, /api/generate (NDJSON streams)

func ollamaRequest(body []byte) request {
	var req struct {
		Model  string `json:"model"`
		Stream *bool  `json:"stream"` // Ollama streams unless told not to
	}
	if err := unmarshal(body, &req); err != nil {
		return request{}
	}
	return request{model: req.Model, stream: req.Stream == nil || *req.Stream}
}

func ollamaPrompt(body []byte) int64 {
	var req struct {
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		Prompt json.RawMessage `json:"prompt"`
		System json.RawMessage `json:"system"`
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	n := textBytes(req.Prompt) + textBytes(req.System)
	for _, m := range req.Messages {
		n += textBytes(m.Content)
	}
	return n
}

func ollamaDocument(b []byte) doc {
	var d struct {
		Message         openAIMsg `json:"message"`
		Response        textLen   `json:"response"`
		Thinking        textLen   `json:"thinking"`
		Done            bool      `json:"done"`
		PromptEvalCount *tokens   `json:"prompt_eval_count"`
		EvalCount       *tokens   `json:"eval_count"`
		Error           textLen   `json:"error"`
	}
	if err := unmarshal(b, &d); err != nil {
		return doc{}
	}
	out := doc{final: d.Done, failed: d.Error > 0}
	out.text = d.Message.len() + int64(d.Response+d.Thinking)
	if out.text > 0 {
		out.tokens = 1
	}
	if d.PromptEvalCount != nil || d.EvalCount != nil {
		out.usage = usage{prompt: count(d.PromptEvalCount), completion: count(d.EvalCount), cached: -1, reasoning: -1}
		out.hasUsage = out.usage.prompt >= 0 || out.usage.completion >= 0
	}
	return out
}

// ---- Hugging Face TGI's native API: /generate, /generate_stream

func tgiRequest(stream bool) func([]byte) request {
	return func(body []byte) request {
		var req struct {
			Model string `json:"model"` // TGI serves one model and needs none
		}
		if err := unmarshal(body, &req); err != nil {
			return request{stream: stream}
		}
		return request{model: req.Model, stream: stream}
	}
}

func tgiPrompt(body []byte) int64 {
	var req struct {
		Inputs json.RawMessage `json:"inputs"`
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	return textBytes(req.Inputs)
}

// tgiHeader reads the counts TGI sends as headers of a /generate answer.
func tgiHeader(h http.Header) (usage, bool) {
	u := noUsage
	u.prompt = headerCount(h.Get("X-Prompt-Tokens"))
	u.completion = headerCount(h.Get("X-Generated-Tokens"))
	return u, u.prompt >= 0 || u.completion >= 0
}

func headerCount(v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func tgiDocument(b []byte) doc {
	var d struct {
		Token *struct {
			Text textLen `json:"text"`
		} `json:"token"`
		GeneratedText *textLen `json:"generated_text"`
		Details       *struct {
			GeneratedTokens *tokens `json:"generated_tokens"`
			InputLength     *tokens `json:"input_length"`  // TGI >= 2 streams
			PromptTokens    *tokens `json:"prompt_tokens"` // LoRAX
		} `json:"details"`
		Error textLen `json:"error"`
	}
	if err := unmarshal(b, &d); err != nil {
		return doc{}
	}
	out := doc{failed: d.Error > 0}
	if d.Token != nil {
		out.tokens = 1 // one event per token, special ones included
	}
	if d.GeneratedText != nil {
		out.text = int64(*d.GeneratedText)
		out.final = d.Token != nil // a stream's last event carries the whole text
	}
	if d.Details != nil {
		out.final = true
		u := noUsage
		u.completion = count(d.Details.GeneratedTokens)
		u.prompt = count(d.Details.InputLength)
		if u.prompt < 0 {
			u.prompt = count(d.Details.PromptTokens)
		}
		out.usage, out.hasUsage = u, u.prompt >= 0 || u.completion >= 0
	}
	return out
}

// ---- llama.cpp's native /completion

func llamaRequest(body []byte) request {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := unmarshal(body, &req); err != nil {
		return request{}
	}
	return request{model: req.Model, stream: req.Stream}
}

func llamaPrompt(body []byte) int64 {
	var req struct {
		Prompt json.RawMessage `json:"prompt"`
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	return textBytes(req.Prompt)
}

func llamaDocument(b []byte) doc {
	var d struct {
		Content         textLen  `json:"content"`
		Tokens          []tokens `json:"tokens"`
		Stop            bool     `json:"stop"`
		TokensPredicted *tokens  `json:"tokens_predicted"`
		TokensEvaluated *tokens  `json:"tokens_evaluated"`
		Timings         *struct {
			PromptN    *tokens `json:"prompt_n"`
			PredictedN *tokens `json:"predicted_n"`
			CacheN     *tokens `json:"cache_n"`
		} `json:"timings"`
		Error textLen `json:"error"`
	}
	if err := unmarshal(b, &d); err != nil {
		return doc{}
	}
	out := doc{final: d.Stop, failed: d.Error > 0, text: int64(d.Content)}
	switch {
	case len(d.Tokens) > 0:
		out.tokens = int64(len(d.Tokens))
	case d.Content > 0:
		out.tokens = 1
	}
	u := noUsage
	u.prompt, u.completion = count(d.TokensEvaluated), count(d.TokensPredicted)
	if t := d.Timings; t != nil {
		if u.prompt < 0 && t.PromptN != nil && t.CacheN != nil && *t.PromptN >= 0 && *t.CacheN >= 0 {
			u.prompt = int64(*t.PromptN + *t.CacheN) // prompt_n counts only what was not cached
		}
		if u.completion < 0 {
			u.completion = count(t.PredictedN)
		}
		u.cached = count(t.CacheN)
	}
	out.usage, out.hasUsage = u, u.prompt >= 0 || u.completion >= 0
	return out
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

// unmarshal is json.Unmarshal that keeps what it could read when a field
// has an unexpected type (servers differ), and fails only on broken JSON.
func unmarshal(doc []byte, v any) error {
	err := json.Unmarshal(doc, v)
	if _, typeOnly := errors.AsType[*json.UnmarshalTypeError](err); err != nil && !typeOnly {
		return errNotJSON
	}
	return nil
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
