package fakeupstream

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/internal/jsonedit"
)

// maxTokens bounds what one request may ask for, so that a careless test
// cannot make the fake write for ever.
const maxTokens = 1 << 20

// vocabulary is what the fake "generates": one word per token.
const vocabulary = "dead labour stored in the machine transfers value no faster than it wears out each answer"

type kind int

const (
	chatKind       kind = iota // /v1/chat/completions
	textKind                   // /v1/completions
	embedKind                  // /v1/embeddings
	ollamaChat                 // /api/chat
	ollamaGenerate             // /api/generate
	tgiGenerate                // /generate
	tgiStream                  // /generate_stream
	llamaKind                  // /completion
)

var paths = map[string]kind{
	"/v1/chat/completions": chatKind,
	"/v1/completions":      textKind,
	"/v1/embeddings":       embedKind,
	"/api/chat":            ollamaChat,
	"/api/generate":        ollamaGenerate,
	"/generate":            tgiGenerate,
	"/generate_stream":     tgiStream,
	"/completion":          llamaKind,
}

func (k kind) openAI() bool { return k == chatKind || k == textKind || k == embedKind }

func (k kind) ollama() bool { return k == ollamaChat || k == ollamaGenerate }

func (k kind) chat() bool { return k == chatKind || k == ollamaChat }

// request is the union of the dialects' request fields the fake reads.
type request struct {
	Model         string `json:"model"`
	Stream        *bool  `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int `json:"max_tokens"`
	MaxCompletionTokens *int `json:"max_completion_tokens"`
	Messages            []struct {
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Prompt          json.RawMessage `json:"prompt"`
	Input           json.RawMessage `json:"input"`
	Inputs          json.RawMessage `json:"inputs"`
	System          json.RawMessage `json:"system"`
	ReasoningEffort string          `json:"reasoning_effort"`
	Options         *struct {
		NumPredict *int `json:"num_predict"`
	} `json:"options"`
	Parameters *struct {
		MaxNewTokens *int `json:"max_new_tokens"`
		Details      bool `json:"details"`
	} `json:"parameters"`
	NPredict *int `json:"n_predict"`
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
	reqID   string
	model   string
	created int64
	seed    uint32
	words   []string
	usage   usage
	inputs  int // embeddings: inputs to embed
	stream  bool
	asked   bool // OpenAI stream: stream_options.include_usage
	details bool // TGI: parameters.details
}

func (a *answer) word(i int64) string {
	return " " + a.words[(int64(a.seed)+i)%int64(len(a.words))]
}

func (a *answer) text(n int64) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(a.word(i))
	}
	return b.String()
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
	a.reqID = r.Header.Get("X-Request-Id")
	out := s.output(w, r)
	defer out.close()
	if a.stream {
		s.stream(out, r, a)
		return
	}
	s.whole(out, r, a)
}

// plan reads a request and decides the answer, or returns why it is refused.
func (s *Server) plan(k kind, body []byte) (*answer, string) {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "request body is not valid JSON"
	}
	if req.Model == "" && (k.openAI() || k.ollama()) {
		return nil, "model is required"
	}
	if req.Model == "" {
		req.Model = s.opts.Models[0] // TGI and llama.cpp serve one model
	}
	stream := req.Stream != nil && *req.Stream
	switch k {
	case ollamaChat, ollamaGenerate:
		stream = req.Stream == nil || *req.Stream
	case tgiGenerate, embedKind:
		stream = false
	case tgiStream:
		stream = true
	}
	if req.StreamOptions != nil && !stream && k.openAI() {
		return nil, "stream_options is only allowed when stream is true"
	}
	n := int64(s.opts.DefaultMaxTokens)
	for _, v := range []*int{req.NPredict, req.MaxTokens, req.MaxCompletionTokens} {
		if v != nil {
			n = int64(*v)
		}
	}
	if req.Options != nil && req.Options.NumPredict != nil {
		n = int64(*req.Options.NumPredict)
	}
	if req.Parameters != nil && req.Parameters.MaxNewTokens != nil {
		n = int64(*req.Parameters.MaxNewTokens)
	}
	if k == embedKind {
		n = 0
	} else if n < 1 || n > maxTokens {
		return nil, fmt.Sprintf("max_tokens must be between 1 and %d", maxTokens)
	}
	var text, messages int64
	switch {
	case k.chat():
		if len(req.Messages) == 0 {
			return nil, "messages is required"
		}
		for _, m := range req.Messages {
			text += contentBytes(m.Content)
		}
		messages = int64(len(req.Messages))
	default:
		prompt := req.Prompt
		switch k {
		case embedKind:
			prompt = req.Input
		case tgiGenerate, tgiStream:
			prompt = req.Inputs
		}
		if len(prompt) == 0 {
			return nil, "prompt is required"
		}
		text = contentBytes(prompt) + contentBytes(req.System)
	}
	sum := canonicalHash(body)
	a := &answer{
		kind:    k,
		model:   req.Model,
		created: s.opts.Created,
		seed:    uint32(sum),
		words:   s.words,
		stream:  stream,
		asked:   req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
		details: req.Parameters != nil && req.Parameters.Details,
	}
	a.id = fmt.Sprintf("cmpl-%016x", sum)
	switch k {
	case chatKind:
		a.id = "chat" + a.id
	case embedKind:
		a.inputs = 1
		var many []json.RawMessage
		if json.Unmarshal(req.Input, &many) == nil {
			a.inputs = max(1, len(many))
		}
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

// canonicalHash hashes a request without its stream_options member: a proxy
// that adds include_usage must get the same text back. Of duplicate
// members the last is removed, the one the proxy edits (jsonedit's rule,
// and the upstream decoders').
func canonicalHash(body []byte) uint64 {
	if bytes.Contains(body, []byte(`"stream_options"`)) {
		if members, _, ok := jsonedit.Members(body, 0); ok {
			if i := jsonedit.Index(body, members, "stream_options"); i >= 0 {
				from, to := jsonedit.Cut(members, i)
				body = jsonedit.Splice(body, from, to, "")
			}
		}
	}
	h := fnv.New64a()
	h.Write(body)
	return h.Sum64()
}

// contentBytes is the length of the text in a prompt or message content: a
// string, an array of strings or of content parts ({"type":"text","text":...}),
// or an array of token ids (one "byte" per id is close enough for a fake).
func contentBytes(raw json.RawMessage) int64 {
	if len(raw) == 0 {
		return 0
	}
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

// output is the response writer of one answer: compressed when the fake
// gzips and the client accepts it, flushed event by event.
type output struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	gz   *gzip.Writer
	body io.Writer
}

func (s *Server) output(w http.ResponseWriter, r *http.Request) *output {
	o := &output{w: w, rc: http.NewResponseController(w), body: w}
	if s.opts.Gzip && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		o.gz = gzip.NewWriter(w)
		o.body = o.gz
	}
	return o
}

func (o *output) header() http.Header { return o.w.Header() }

// write writes and flushes b, and reports whether the client is still there.
func (o *output) write(b []byte) bool {
	if _, err := o.body.Write(b); err != nil {
		return false
	}
	if o.gz != nil && o.gz.Flush() != nil {
		return false
	}
	return o.rc.Flush() == nil
}

func (o *output) close() {
	if o.gz != nil {
		_ = o.gz.Close()
	}
}

// abort drops the connection without ending the response.
func abort() { panic(http.ErrAbortHandler) }

// whole answers a request that did not ask for a stream.
func (s *Server) whole(out *output, r *http.Request, a *answer) {
	n := a.usage.CompletionTokens
	if s.opts.Fail == FailStall {
		<-r.Context().Done()
		return
	}
	if s.opts.Batch == nil {
		if !sleep(r.Context(), s.opts.TokenDelay*(time.Duration(max(n, 1)-1))) {
			return
		}
	} else {
		pace, done := s.pace(a.usage.PromptTokens)
		for i := range max(n, 1) {
			if !pace.token(r.Context(), i) {
				done()
				return
			}
		}
		done()
	}
	body, reported := s.wholeBody(out.header(), a)
	ct := "application/json"
	out.header().Set("Content-Type", ct)
	if s.opts.Fail == FailCut {
		if out.gz == nil {
			out.header().Set("Content-Length", fmt.Sprint(len(body)))
		}
		out.write(body[:len(body)/2])
		abort()
	}
	// One write, no flush: net/http then sends a Content-Length, as
	// servers do for a whole answer.
	if _, err := out.body.Write(body); err != nil {
		return
	}
	c := Counts{Requests: 1, PromptTokens: a.usage.PromptTokens, CompletionTokens: n}
	if reported {
		c.UsageReported = 1
		c.CachedTokens, c.ReasoningTokens = s.reportedDetails(a)
	}
	s.count(a.model, c)
}

// reportedDetails are the cached and reasoning counts the dialect reports.
func (s *Server) reportedDetails(a *answer) (cached, reasoning int64) {
	switch a.kind {
	case chatKind, textKind:
		return a.usage.PromptTokensDetails.CachedTokens, a.usage.CompletionTokensDetails.ReasoningTokens
	case llamaKind:
		return a.usage.PromptTokensDetails.CachedTokens, 0
	}
	return 0, 0
}

func (s *Server) wholeBody(h http.Header, a *answer) (body []byte, reported bool) {
	n := a.usage.CompletionTokens
	text := a.text(n)
	length := "length"
	reported = s.opts.Usage != UsageOmitted
	switch a.kind {
	case chatKind, textKind:
		var rep reply
		if a.kind == chatKind {
			rep = a.reply("chat.completion", choice{Message: &msg{Role: "assistant", Content: &text}, FinishReason: &length})
		} else {
			rep = a.reply("text_completion", choice{Text: &text, FinishReason: &length})
		}
		if reported {
			rep.Usage = mustJSON(a.usage)
			if s.opts.Timings {
				rep.Timings = mustJSON(a.timings())
			}
		}
		return mustJSON(rep), reported
	case embedKind:
		return s.embeddings(a, reported), reported
	case ollamaChat, ollamaGenerate:
		line := a.ollamaLine(text, true, s.opts.Usage)
		return mustJSON(line), s.opts.Usage == UsageReported
	case tgiGenerate:
		out := map[string]any{"generated_text": text}
		if a.details && reported {
			out["details"] = map[string]any{"finish_reason": "length", "generated_tokens": n, "seed": nil, "prefill": []any{}, "tokens": []any{}}
		}
		if reported {
			h.Set("X-Prompt-Tokens", fmt.Sprint(a.usage.PromptTokens))
			h.Set("X-Generated-Tokens", fmt.Sprint(n))
		}
		return mustJSON(out), reported
	case llamaKind:
		return mustJSON(a.llamaFinal(text, reported)), reported
	}
	panic("fakeupstream: no whole answer for this kind")
}

func (s *Server) embeddings(a *answer, reported bool) []byte {
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	out := struct {
		Object string          `json:"object"`
		Data   []item          `json:"data"`
		Model  string          `json:"model"`
		Usage  json.RawMessage `json:"usage,omitempty"`
	}{Object: "list", Model: a.model}
	for i := range a.inputs {
		v := make([]float64, 8)
		for j := range v {
			v[j] = float64((int(a.seed)+i*8+j)%97) / 97
		}
		out.Data = append(out.Data, item{Object: "embedding", Index: i, Embedding: v})
	}
	if reported {
		out.Usage = mustJSON(map[string]int64{"prompt_tokens": a.usage.PromptTokens, "total_tokens": a.usage.PromptTokens})
	}
	return mustJSON(out)
}

// events frames the documents of a stream in the dialect's way.
func (a *answer) frame(doc []byte) []byte {
	switch {
	case a.kind.ollama():
		return append(doc, '\n')
	case a.kind == tgiStream:
		return append(append([]byte("data:"), doc...), "\n\n"...)
	}
	return append(append([]byte("data: "), doc...), "\n\n"...)
}
