package fakeupstream

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/internal/apierror"
)

// maxTokens bounds what one request may ask for, so that a careless test
// cannot make the fake write for ever.
const maxTokens = 1 << 20

// vocabulary is what the fake "generates": one word per token.
const vocabulary = "dead labour stored in the machine transfers value no faster than it wears out each answer"

type kind int

const (
	chatKind kind = iota // /v1/chat/completions
	textKind             // /v1/completions
)

type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int `json:"max_tokens"`
	MaxCompletionTokens *int `json:"max_completion_tokens"`
	Messages            []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Prompt          json.RawMessage `json:"prompt"`
	ReasoningEffort string          `json:"reasoning_effort"`
}

type usage struct {
	PromptTokens        int64 `json:"prompt_tokens"`
	CompletionTokens    int64 `json:"completion_tokens"`
	TotalTokens         int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// answer is everything about a reply that follows from the request.
type answer struct {
	kind    kind
	id      string
	model   string
	created int64
	seed    uint32
	words   []string
	usage   usage
	stream  bool
	report  bool // streamed: send a usage chunk
}

func (a *answer) word(i int64) string {
	return " " + a.words[(int64(a.seed)+i)%int64(len(a.words))]
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request, k kind) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read request body")
		return
	}
	a, msg := s.plan(k, body)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if a.stream {
		s.stream(w, r, a)
		return
	}
	s.whole(w, r, a)
}

// plan reads a request and decides the answer, or returns why it is refused.
func (s *Server) plan(k kind, body []byte) (*answer, string) {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "request body is not valid JSON"
	}
	if req.Model == "" {
		return nil, "model is required"
	}
	if req.StreamOptions != nil && !req.Stream {
		return nil, "stream_options is only allowed when stream is true"
	}
	n := int64(s.opts.DefaultMaxTokens)
	switch {
	case req.MaxCompletionTokens != nil:
		n = int64(*req.MaxCompletionTokens)
	case req.MaxTokens != nil:
		n = int64(*req.MaxTokens)
	}
	if n < 1 || n > maxTokens {
		return nil, fmt.Sprintf("max_tokens must be between 1 and %d", maxTokens)
	}
	var text, messages int64
	if k == chatKind {
		if len(req.Messages) == 0 {
			return nil, "messages is required"
		}
		for _, m := range req.Messages {
			text += contentBytes(m.Content)
		}
		messages = int64(len(req.Messages))
	} else {
		if len(req.Prompt) == 0 {
			return nil, "prompt is required"
		}
		text = contentBytes(req.Prompt)
	}
	h := fnv.New64a()
	h.Write(body)
	sum := h.Sum64()
	a := &answer{
		kind:    k,
		model:   req.Model,
		created: s.opts.Created,
		seed:    uint32(sum),
		words:   s.words,
		stream:  req.Stream,
		report:  !req.Stream || (req.StreamOptions != nil && req.StreamOptions.IncludeUsage),
	}
	a.id = fmt.Sprintf("cmpl-%016x", sum)
	if k == chatKind {
		a.id = "chat" + a.id
	}
	u := &a.usage
	u.PromptTokens = max(1, (text+3)/4+3*messages)
	u.CompletionTokens = n
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails.CachedTokens = u.PromptTokens / 2
	if req.ReasoningEffort != "" {
		u.CompletionTokensDetails.ReasoningTokens = n / 2
	}
	return a, ""
}

// contentBytes is the length of the text in a prompt or message content: a
// string, an array of strings or of content parts ({"type":"text","text":...}),
// or an array of token ids (one "byte" per id is close enough for a fake).
func contentBytes(raw json.RawMessage) int64 {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return int64(len(str))
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return 0
	}
	var n int64
	for _, p := range parts {
		var part struct {
			Text string `json:"text"`
		}
		switch {
		case json.Unmarshal(p, &str) == nil:
			n += int64(len(str))
		case json.Unmarshal(p, &part) == nil:
			n += int64(len(part.Text))
		default:
			n++
		}
	}
	return n
}

type choice struct {
	Index        int     `json:"index"`
	Message      *msg    `json:"message,omitempty"`
	Delta        *msg    `json:"delta,omitempty"`
	Text         *string `json:"text,omitempty"`
	FinishReason *string `json:"finish_reason"`
}

type msg struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type reply struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	// Usage is omitted on plain chunks, null on chunks of a stream that
	// asked for usage (as the OpenAI API sends them), set on the last.
	Usage json.RawMessage `json:"usage,omitempty"`
}

func (a *answer) reply(object string, choices ...choice) reply {
	return reply{ID: a.id, Object: object, Created: a.created, Model: a.model, Choices: choices}
}

// whole answers a request that did not ask for a stream.
func (s *Server) whole(w http.ResponseWriter, r *http.Request, a *answer) {
	n := a.usage.CompletionTokens
	if !sleep(r.Context(), s.opts.TokenDelay*(time.Duration(n-1))) {
		return
	}
	var text strings.Builder
	for i := range n {
		text.WriteString(a.word(i))
	}
	out := text.String()
	length := "length"
	var rep reply
	if a.kind == chatKind {
		rep = a.reply("chat.completion", choice{Message: &msg{Role: "assistant", Content: &out}, FinishReason: &length})
	} else {
		rep = a.reply("text_completion", choice{Text: &out, FinishReason: &length})
	}
	rep.Usage = mustJSON(a.usage)
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(mustJSON(rep)); err != nil {
		return
	}
	s.count(a.model, Counts{
		Requests: 1, PromptTokens: a.usage.PromptTokens, CompletionTokens: n,
		CachedTokens:    a.usage.PromptTokensDetails.CachedTokens,
		ReasoningTokens: a.usage.CompletionTokensDetails.ReasoningTokens,
		UsageReported:   1,
	})
}

// stream answers a request that asked for a stream, one SSE event a token.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, a *answer) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)

	sent := Counts{Requests: 1, Streamed: 1, PromptTokens: a.usage.PromptTokens}
	defer func() { s.count(a.model, sent) }()

	object := "text_completion"
	if a.kind == chatKind {
		object = "chat.completion.chunk"
	}
	event := func(rep reply) bool {
		if a.report && rep.Usage == nil {
			rep.Usage = json.RawMessage("null")
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", mustJSON(rep)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	token := func(text *string, finish *string) choice {
		if a.kind == chatKind {
			return choice{Delta: &msg{Content: text}, FinishReason: finish}
		}
		if text == nil {
			text = new(string)
		}
		return choice{Text: text, FinishReason: finish}
	}

	if a.kind == chatKind {
		empty := ""
		if !event(a.reply(object, choice{Delta: &msg{Role: "assistant", Content: &empty}})) {
			return
		}
	}
	for i := range a.usage.CompletionTokens {
		if i > 0 && !sleep(ctx, s.opts.TokenDelay) {
			return
		}
		word := a.word(i)
		if !event(a.reply(object, token(&word, nil))) {
			return
		}
		sent.CompletionTokens++
	}
	length := "length"
	if !event(a.reply(object, token(nil, &length))) {
		return
	}
	if a.report {
		last := a.reply(object)
		last.Choices = []choice{}
		last.Usage = mustJSON(a.usage)
		if !event(last) {
			return
		}
		sent.UsageReported = 1
		sent.CachedTokens = a.usage.PromptTokensDetails.CachedTokens
		sent.ReasoningTokens = a.usage.CompletionTokensDetails.ReasoningTokens
	}
	if _, err := io.WriteString(w, "data: [DONE]\n\n"); err == nil {
		_ = rc.Flush()
	}
}

func (s *Server) models(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range s.opts.Models {
		list.Data = append(list.Data, model{ID: m, Object: "model", Created: s.opts.Created, OwnedBy: "fakeupstream"})
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(mustJSON(list))
}

// writeError answers with an OpenAI-shaped error.
func writeError(w http.ResponseWriter, status int, message string) {
	apierror.Write(w, status, "invalid_request_error", message)
}

// mustJSON marshals values built here, which cannot fail to marshal.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fakeupstream: marshal %T: %v", v, err))
	}
	return b
}
