package dialect

import (
	"bytes"
	"encoding/json"

	"github.com/deadlabour/deadlabour/internal/jsonedit"
)

// ---- OpenAI-compatible: vLLM, SGLang, TGI's /v1, llama.cpp's /v1, Ollama's /v1

func openAIRequest(body []byte) Request {
	if r, ok := fastOpenAIRequest(body); ok {
		return r
	}
	return openAIRequestJSON(body)
}

// openAIRequestJSON is openAIRequest through encoding/json, for what
// fastOpenAIRequest does not read.
func openAIRequestJSON(body []byte) Request {
	r, ok := modelStream(body)
	if ok {
		r.Asked = askedUsage(body)
	}
	return r
}

// modelStream reads the members model and stream (false when absent) of a
// request body; ok false when the body is not JSON, and then only the
// model, read from a JSON object at its start (prefixModel).
func modelStream(body []byte) (r Request, ok bool) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := unmarshal(body, &req); err != nil {
		return Request{Model: prefixModel(body)}, false
	}
	return Request{Model: req.Model, Stream: req.Stream}, true
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
		chatPrompt
		Input json.RawMessage `json:"input"` // embeddings
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	return req.bytes() + textBytes(req.Input)
}

// chatPrompt is the prompt of a chat or completion request as OpenAI's
// and Ollama's APIs share it: messages, or a prompt.
type chatPrompt struct {
	Messages []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Prompt json.RawMessage `json:"prompt"`
}

// bytes is the text bytes of the prompt and of every message's content.
func (p chatPrompt) bytes() int64 {
	n := textBytes(p.Prompt)
	for _, m := range p.Messages {
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
	Timings *llamaTimings `json:"timings"` // llama-server
	Error   textLen       `json:"error"`
	Object  string        `json:"object"` // "error" in vLLM's older error chunks
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
	usage        Usage // its counts
	hasTimings   bool  // the timings member (llama-server) is an object
	timings      Usage // its counts (timingsUsage)
}

func openAIDocument(b []byte) Doc {
	r, ok := fastOpenAIDocument(b)
	if !ok {
		if r, ok = openAIReadJSON(b); !ok {
			return Doc{}
		}
	}
	out := Doc{Failed: r.failed, Text: r.text, Tokens: r.tokens, Usage: NoUsage}
	// encoding/json matches keys whatever their case (and through \u
	// escapes); servers write "usage". Requiring that exact key keeps a
	// body's tail search and a whole document in agreement. A block with
	// nothing readable in it is none. Each block is checked on its own: a
	// count over MaxTokens in either makes the whole invalid.
	readable := func(u Usage) bool { return u.Invalid || u.Prompt >= 0 || u.Completion >= 0 }
	// llama-server's timings come beside its usage, and alone where it
	// sends no usage (a stream that did not ask for it): the usage block's
	// counts win, count by count.
	if t := r.timings.checked(); r.hasTimings && readable(t) && bytes.Contains(b, []byte(`"timings"`)) {
		out.Usage, out.HasUsage = t, true
	}
	if u := r.usage.checked(); r.hasUsage && readable(u) && bytes.Contains(b, []byte(`"usage"`)) {
		out.Usage.Merge(u)
		out.HasUsage = true
		out.UsageOnly = r.choices <= 0
	}
	if !out.HasUsage {
		out.Usage = Usage{}
	}
	if out.Usage.Invalid {
		out.Usage = out.Usage.checked()
	}
	return out
}

// openAIReadJSON reads a document through encoding/json, for what
// fastOpenAIDocument does not read; ok is false for one that is not JSON.
func openAIReadJSON(b []byte) (openAIRead, bool) {
	var d openAIDoc
	if err := unmarshal(b, &d); err != nil {
		return openAIRead{}, false
	}
	r := openAIRead{failed: d.Error > 0 || d.Object == "error", choices: -1, usage: NoUsage}
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
	if t := d.Timings; t != nil {
		r.hasTimings, r.timings = true, t.usage()
	}
	if u := d.Usage; u != nil {
		r.hasUsage = true
		r.usage.Prompt, r.usage.Completion = count(u.PromptTokens), count(u.CompletionTokens)
		if u.PromptTokensDetails != nil {
			r.usage.Cached = count(u.PromptTokensDetails.CachedTokens)
		}
		if u.CompletionTokensDetails != nil {
			r.usage.Reasoning = count(u.CompletionTokensDetails.ReasoningTokens)
		}
	}
	return r, true
}
