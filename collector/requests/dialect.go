package requests

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// usage is what a response says a request cost; -1 is unknown.
type usage struct {
	prompt, completion, cached, reasoning int64
}

var errNotJSON = errors.New("not a JSON document")

// A dialect knows where one family of inference APIs keeps the model, the
// stream flag and the token counts.
type dialect struct {
	// request reads the model and the stream flag from a request body. A body
	// it cannot read gives "" and false: the upstream will refuse it itself.
	request func(body []byte) (model string, stream bool)
	// document reads one JSON document of a response: a whole non-streamed
	// body, or the data of one streamed event. hasUsage says a usage block
	// was there; hasToken that the document carries generated output.
	document func(doc []byte) (u usage, hasUsage, hasToken bool)
	// usageKey is the key of the usage block, so that the tail of a body too
	// large to read whole can still be searched for it.
	usageKey string
}

// An endpoint is one metered path.
type endpoint struct {
	method  string
	dialect *dialect
}

// endpoints is the table of metered paths. Every other path is forwarded
// without being recorded. More dialects (embeddings, Ollama's /api/chat,
// TGI's /generate, llama.cpp's /completion) are entries here with their own
// functions; a framing other than JSON and SSE (Ollama's NDJSON) also needs a
// case in framingOf.
func endpoints() map[string]endpoint {
	openAI := &dialect{request: openAIRequest, document: openAIDocument, usageKey: "usage"}
	return map[string]endpoint{
		"/v1/chat/completions": {method: "POST", dialect: openAI},
		"/v1/completions":      {method: "POST", dialect: openAI},
	}
}

func openAIRequest(body []byte) (model string, stream bool) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := unmarshal(body, &req); err != nil {
		return "", false
	}
	return req.Model, req.Stream
}

// openAIDoc is the part of an OpenAI response or chunk the proxy reads.
// Generated text is never copied out: present only says whether it is there.
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
	Choices []struct {
		Text  present `json:"text"` // completions
		Delta struct {
			Content          present `json:"content"`
			ReasoningContent present `json:"reasoning_content"` // vLLM, DeepSeek
			Reasoning        present `json:"reasoning"`         // vLLM >= 0.10, Ollama
			ToolCalls        present `json:"tool_calls"`
		} `json:"delta"`
	} `json:"choices"`
}

func openAIDocument(doc []byte) (u usage, hasUsage, hasToken bool) {
	var d openAIDoc
	if err := unmarshal(doc, &d); err != nil {
		return usage{}, false, false
	}
	for _, c := range d.Choices {
		if c.Text || c.Delta.Content || c.Delta.ReasoningContent || c.Delta.Reasoning || c.Delta.ToolCalls {
			hasToken = true
			break
		}
	}
	// encoding/json matches keys whatever their case (and through \u
	// escapes); servers write "usage". Requiring that exact key also keeps
	// meter.event's skip of documents without it from changing any result.
	if d.Usage == nil || !bytes.Contains(doc, []byte(`"usage"`)) {
		return usage{}, false, hasToken
	}
	u = usage{prompt: count(d.Usage.PromptTokens), completion: count(d.Usage.CompletionTokens), cached: -1, reasoning: -1}
	if u.prompt < 0 && u.completion < 0 {
		return usage{}, false, hasToken // a usage block with nothing readable in it
	}
	if d.Usage.PromptTokensDetails != nil {
		u.cached = count(d.Usage.PromptTokensDetails.CachedTokens)
	}
	if d.Usage.CompletionTokensDetails != nil {
		u.reasoning = count(d.Usage.CompletionTokensDetails.ReasoningTokens)
	}
	return u, true, hasToken
}

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

// present is true for any JSON value but null, "", [] and {}.
type present bool

func (p *present) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0, bytes.Equal(b, []byte("null")), bytes.Equal(b, []byte(`""`)):
		*p = false
	case b[0] == '[' || b[0] == '{':
		*p = len(bytes.TrimSpace(b[1:len(b)-1])) > 0
	default:
		*p = true
	}
	return nil
}
