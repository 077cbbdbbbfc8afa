package dialect

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ---- Ollama's native API: /api/chat, /api/generate (NDJSON streams)

func ollamaRequest(body []byte) Request {
	var req struct {
		Model  string `json:"model"`
		Stream *bool  `json:"stream"` // Ollama streams unless told not to
	}
	if err := unmarshal(body, &req); err != nil {
		return Request{Model: prefixModel(body)}
	}
	return Request{Model: req.Model, Stream: req.Stream == nil || *req.Stream}
}

func ollamaPrompt(body []byte) int64 {
	var req struct {
		chatPrompt
		System json.RawMessage `json:"system"`
	}
	if unmarshal(body, &req) != nil {
		return -1
	}
	return req.bytes() + textBytes(req.System)
}

func ollamaDocument(b []byte) Doc {
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
		return Doc{}
	}
	out := Doc{Final: d.Done, Failed: d.Error > 0}
	out.Text = d.Message.len() + int64(d.Response+d.Thinking)
	if out.Text > 0 {
		out.Tokens = 1
	}
	if d.PromptEvalCount != nil || d.EvalCount != nil {
		u := Usage{Prompt: count(d.PromptEvalCount), Completion: count(d.EvalCount), Cached: -1, Reasoning: -1}
		out.Usage, out.HasUsage = u.checked(), u.Prompt >= 0 || u.Completion >= 0
	}
	return out
}

// ---- Hugging Face TGI's native API: /generate, /generate_stream

func tgiRequest(stream bool) func([]byte) Request {
	return func(body []byte) Request {
		var req struct {
			Model string `json:"model"` // TGI serves one model and needs none
		}
		if err := unmarshal(body, &req); err != nil {
			return Request{Model: prefixModel(body), Stream: stream}
		}
		return Request{Model: req.Model, Stream: stream}
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
func tgiHeader(h http.Header) (Usage, bool) {
	u := NoUsage
	u.Prompt = headerCount(h.Get("X-Prompt-Tokens"))
	u.Completion = headerCount(h.Get("X-Generated-Tokens"))
	return u.checked(), u.Prompt >= 0 || u.Completion >= 0
}

func headerCount(v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func tgiDocument(b []byte) Doc {
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
		return Doc{}
	}
	out := Doc{Failed: d.Error > 0}
	if d.Token != nil {
		out.Tokens = 1 // one event per token, special ones included
	}
	if d.GeneratedText != nil {
		out.Text = int64(*d.GeneratedText)
		out.Final = d.Token != nil // a stream's last event carries the whole text
	}
	if d.Details != nil {
		out.Final = true
		u := NoUsage
		u.Completion = count(d.Details.GeneratedTokens)
		u.Prompt = count(d.Details.InputLength)
		if u.Prompt < 0 {
			u.Prompt = count(d.Details.PromptTokens)
		}
		out.Usage, out.HasUsage = u.checked(), u.Prompt >= 0 || u.Completion >= 0
	}
	return out
}

// ---- llama.cpp's native /completion

func llamaRequest(body []byte) Request {
	r, _ := modelStream(body)
	return r
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

func llamaDocument(b []byte) Doc {
	var d struct {
		Content         textLen       `json:"content"`
		Tokens          []tokens      `json:"tokens"`
		Stop            bool          `json:"stop"`
		TokensPredicted *tokens       `json:"tokens_predicted"`
		TokensEvaluated *tokens       `json:"tokens_evaluated"`
		Timings         *llamaTimings `json:"timings"`
		Error           textLen       `json:"error"`
	}
	if err := unmarshal(b, &d); err != nil {
		return Doc{}
	}
	out := Doc{Final: d.Stop, Failed: d.Error > 0, Text: int64(d.Content)}
	switch {
	case len(d.Tokens) > 0:
		out.Tokens = int64(len(d.Tokens))
	case d.Content > 0:
		out.Tokens = 1
	}
	// The native counts, and timings for what they leave out.
	// (Each checked on its own: a count over MaxTokens in either makes the
	// whole invalid.)
	u := NoUsage
	if d.Timings != nil {
		u = d.Timings.usage().checked()
	}
	u.Merge(Usage{Prompt: count(d.TokensEvaluated), Completion: count(d.TokensPredicted), Cached: -1, Reasoning: -1}.checked())
	out.Usage, out.HasUsage = u.checked(), u.Invalid || u.Prompt >= 0 || u.Completion >= 0
	return out
}
