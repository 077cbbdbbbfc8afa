package fakeupstream

import (
	"encoding/json"
	"net/http"
	"time"
)

// Streamed answers: the events of every dialect, their end and failures.

// stream answers a request that asked for a stream, one event a token.
func (s *Server) stream(out *output, r *http.Request, a *answer) {
	ctx := r.Context()
	h := out.header()
	switch {
	case a.kind.ollama():
		h.Set("Content-Type", "application/x-ndjson")
	default:
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
	}
	out.w.WriteHeader(http.StatusOK)

	sent := Counts{Requests: 1, Streamed: 1, PromptTokens: a.usage.PromptTokens}
	defer func() { s.count(a.model, sent) }()
	events := 0
	emit := func(doc []byte) bool {
		if !out.write(a.frame(doc)) {
			return false
		}
		if s.opts.OnEvent != nil {
			s.opts.OnEvent(a.reqID, events)
		}
		events++
		return true
	}

	if a.kind == chatKind {
		empty := ""
		if !emit(s.chunk(a, 0, choice{Delta: &msg{Role: "assistant", Content: &empty}})) {
			return
		}
	}
	n := a.usage.CompletionTokens
	pace, done := s.pace(a.usage.PromptTokens)
	defer done()
	for i := range n {
		if s.opts.Fail != FailNone && i == int64(s.opts.FailAfter) {
			s.fail(out, r, a, emit)
			return
		}
		if !pace.token(ctx, i) {
			return
		}
		if !emit(s.tokenEvent(a, i)) {
			return
		}
		sent.CompletionTokens++
	}
	reported := s.finish(a, emit)
	if reported {
		sent.UsageReported = 1
		sent.CachedTokens, sent.ReasoningTokens = s.reportedDetails(a)
		if !a.asked && a.kind.openAI() {
			sent.ReasoningTokens = 0 // reported by timings alone, which have none
		}
	}
	s.endStream(out, r)
}

// endStream ends a stream's response and connection as the quirks
// TerminatorDelay and CloseAfterStream say (see the package doc).
func (s *Server) endStream(out *output, r *http.Request) {
	if s.opts.CloseAfterStream <= 0 || !r.ProtoAtLeast(1, 1) {
		// net/http writes the terminator once the handler returns, in a
		// write of its own.
		sleep(r.Context(), s.opts.TerminatorDelay)
		return
	}
	s.hijackMu.Lock()
	if s.closing || r.Context().Err() != nil {
		s.hijackMu.Unlock()
		return
	}
	s.hijacked.Add(1)
	s.hijackMu.Unlock()
	defer s.hijacked.Done()
	out.close() // a gzip stream's end, before the connection is taken
	conn, _, err := out.rc.Hijack()
	if err != nil {
		return
	}
	defer conn.Close() // unread: a request sent meanwhile is never answered
	time.Sleep(s.opts.TerminatorDelay)
	if _, err := conn.Write([]byte("0\r\n\r\n")); err != nil {
		return
	}
	time.Sleep(s.opts.CloseAfterStream)
}

// tokenEvent is the event of token i (the last one, for TGI, also ends the stream).
func (s *Server) tokenEvent(a *answer, i int64) []byte {
	word := a.word(i)
	n := a.usage.CompletionTokens
	switch a.kind {
	case chatKind:
		return s.chunk(a, i+1, choice{Delta: &msg{Content: &word}})
	case textKind:
		return s.chunk(a, i+1, choice{Text: &word})
	case ollamaChat, ollamaGenerate:
		return mustJSON(a.ollamaLine(word, false, s.opts.Usage))
	case tgiStream:
		ev := tgiEvent{Index: i + 1, Token: tgiToken{ID: int64(a.seed%1000) + i, Text: word, Logprob: -0.25}}
		if i == n-1 {
			full := a.text(n)
			ev.GeneratedText = &full
			if a.details && s.opts.Usage != UsageOmitted {
				ev.Details = &tgiDetails{FinishReason: "length", GeneratedTokens: n, InputLength: a.usage.PromptTokens}
			}
		}
		return mustJSON(ev)
	case llamaKind:
		ev := map[string]any{"index": 0, "content": word, "tokens": []int64{int64(a.seed%1000) + i}, "stop": false, "id_slot": 0}
		if s.opts.Usage == UsageCumulative {
			ev["tokens_predicted"], ev["tokens_evaluated"] = i+1, a.usage.PromptTokens
		}
		return mustJSON(ev)
	}
	panic("fakeupstream: no stream for this kind")
}

// finish writes what ends a stream after its tokens, and reports whether
// the stream carried the full counts.
func (s *Server) finish(a *answer, emit func([]byte) bool) bool {
	n := a.usage.CompletionTokens
	length := "length"
	switch a.kind {
	case chatKind, textKind:
		var c choice
		if a.kind == chatKind {
			c = choice{Delta: &msg{}, FinishReason: &length}
		} else {
			c = choice{Text: new(string), FinishReason: &length}
		}
		// llama-server puts its timings on the last chunk it sends: the
		// usage chunk when there is one, else this one.
		timings := s.opts.Timings && s.opts.Usage != UsageOmitted
		asked := a.asked && s.opts.Usage != UsageOmitted
		last := s.chunk(a, n, c)
		if timings && !asked {
			last = s.withTimings(a, n, c)
		}
		if !emit(last) {
			return false
		}
		if asked {
			last := a.reply(a.object())
			last.Choices = []choice{}
			last.Usage = mustJSON(a.usage)
			if timings {
				last.Timings = mustJSON(a.timings())
			}
			if !emit(mustJSON(last)) {
				return false
			}
		}
		emit([]byte("[DONE]"))
		return asked || timings
	case ollamaChat, ollamaGenerate:
		return emit(mustJSON(a.ollamaLine("", true, s.opts.Usage))) && s.opts.Usage == UsageReported
	case tgiStream:
		return a.details && s.opts.Usage != UsageOmitted // the last token event ended it
	case llamaKind:
		return emit(mustJSON(a.llamaFinal("", s.opts.Usage != UsageOmitted))) && s.opts.Usage != UsageOmitted
	}
	return false
}

// fail fails a stream at the current token as Options.Fail says.
func (s *Server) fail(out *output, r *http.Request, a *answer, emit func([]byte) bool) {
	switch s.opts.Fail {
	case FailCut:
		abort()
	case FailStall:
		<-r.Context().Done()
	case FailErrorEvent:
		const m = "fake failure during generation"
		switch {
		case a.kind.openAI():
			emit(mustJSON(map[string]any{"error": map[string]any{"message": m, "type": "server_error", "code": 500}}))
			emit([]byte("[DONE]"))
		case a.kind.ollama():
			emit(mustJSON(map[string]string{"error": m}))
		case a.kind == tgiStream:
			emit(mustJSON(map[string]string{"error": "Request failed during generation: " + m, "error_type": "generation"}))
		default:
			emit(mustJSON(map[string]any{"error": map[string]any{"code": 500, "message": m, "type": "server_error"}}))
		}
	}
}

type tgiToken struct {
	ID      int64   `json:"id"`
	Text    string  `json:"text"`
	Logprob float64 `json:"logprob"`
	Special bool    `json:"special"`
}

type tgiDetails struct {
	FinishReason    string `json:"finish_reason"`
	GeneratedTokens int64  `json:"generated_tokens"`
	Seed            *int   `json:"seed"`
	InputLength     int64  `json:"input_length"`
}

type tgiEvent struct {
	Index         int64       `json:"index"`
	Token         tgiToken    `json:"token"`
	GeneratedText *string     `json:"generated_text"`
	Details       *tgiDetails `json:"details"`
}

// ollamaLine is one line of an Ollama answer: a token, or the last one
// (done) with the counts the usage mode allows.
func (a *answer) ollamaLine(text string, done bool, mode UsageMode) map[string]any {
	line := map[string]any{"model": a.model, "created_at": time.Unix(a.created, 0).UTC().Format(time.RFC3339Nano), "done": done}
	if a.kind == ollamaChat {
		line["message"] = map[string]string{"role": "assistant", "content": text}
	} else {
		line["response"] = text
	}
	if !done {
		return line
	}
	line["done_reason"] = "length"
	if mode == UsageOmitted {
		return line
	}
	n := a.usage.CompletionTokens
	line["total_duration"] = 1_000_000 * (n + 5)
	line["load_duration"] = 1_000_000
	line["eval_count"], line["eval_duration"] = n, 1_000_000*n
	if mode == UsageReported {
		line["prompt_eval_count"], line["prompt_eval_duration"] = a.usage.PromptTokens, 1_000_000*2
	}
	return line
}

// llamaFinal is llama.cpp's whole answer, or the last event of its stream.
func (a *answer) llamaFinal(text string, reported bool) map[string]any {
	ev := map[string]any{"index": 0, "content": text, "tokens": []int64{}, "id_slot": 0, "stop": true, "model": a.model,
		"stop_type": "limit", "stopping_word": "", "truncated": false}
	if reported {
		p, n := a.usage.PromptTokens, a.usage.CompletionTokens
		ev["tokens_predicted"], ev["tokens_evaluated"], ev["tokens_cached"] = n, p, p+n
		ev["timings"] = a.timings()
	}
	return ev
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
	// Timings: llama.cpp's (Options.Timings).
	Timings json.RawMessage `json:"timings,omitempty"`
	// Usage is omitted on plain chunks, null on chunks of a stream that
	// asked for usage (as the OpenAI API sends them), set on the last.
	Usage json.RawMessage `json:"usage,omitempty"`
}

func (a *answer) reply(object string, choices ...choice) reply {
	return reply{ID: a.id, Object: object, Created: a.created, Model: a.model, Choices: choices}
}

func (a *answer) object() string {
	if a.kind == chatKind {
		return "chat.completion.chunk"
	}
	return "text_completion"
}

// chunk is an OpenAI stream chunk after `done` tokens, with the usage the
// mode calls for.
func (s *Server) chunk(a *answer, done int64, c choice) []byte {
	rep := a.reply(a.object(), c)
	switch {
	case s.opts.Usage == UsageCumulative:
		u := a.usage
		u.CompletionTokens = min(done, u.CompletionTokens)
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
		rep.Usage = mustJSON(u)
	case a.asked && s.opts.Usage == UsageReported && !s.opts.Timings:
		rep.Usage = json.RawMessage("null")
	}
	return mustJSON(rep)
}

// withTimings is chunk with llama.cpp's timings.
func (s *Server) withTimings(a *answer, done int64, c choice) []byte {
	var rep reply
	if err := json.Unmarshal(s.chunk(a, done, c), &rep); err != nil {
		panic("fakeupstream: a chunk of its own does not read back: " + err.Error())
	}
	rep.Timings = mustJSON(a.timings())
	return mustJSON(rep)
}

// timings is llama.cpp's timings object for the whole answer.
func (a *answer) timings() map[string]any {
	p, c, n := a.usage.PromptTokens, a.usage.PromptTokensDetails.CachedTokens, a.usage.CompletionTokens
	return map[string]any{"cache_n": c, "prompt_n": p - c, "prompt_ms": 2.5, "predicted_n": n, "predicted_ms": 10.0 * float64(n)}
}
