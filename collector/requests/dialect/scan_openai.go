package dialect

// The readers of the fast path (see jsonScan) for the OpenAI documents:
// what it reads must be what encoding/json reads into openAIDoc.

// fastOpenAIRequest reads an OpenAI request body as openAIRequest does, or
// gives up (ok false).
func fastOpenAIRequest(body []byte) (r Request, ok bool) {
	s := jsonScan{b: body}
	if s.peek() != '{' {
		return r, false
	}
	var seen uint32
	s.object(func(key []byte) {
		switch s.member(key, &seen, "model", "stream", "stream_options") {
		case 0:
			r.Model = string(s.plainString())
		case 1:
			s.boolean(&r.Stream)
		case 2:
			var include, continuous bool
			s.objectOrNull(func() {
				var seen uint32
				s.object(func(key []byte) {
					switch s.member(key, &seen, "include_usage", "continuous_usage_stats") {
					case 0:
						s.boolean(&include)
					case 1:
						s.boolean(&continuous)
					default:
						s.value()
					}
				})
			})
			r.Asked = include || continuous
		default:
			s.value()
		}
	})
	return r, s.end()
}

// fastOpenAIDocument reads an OpenAI answer or chunk as decoding it into
// openAIDoc does, or gives up (ok false).
func fastOpenAIDocument(b []byte) (r openAIRead, ok bool) {
	r = openAIRead{choices: -1, usage: NoUsage}
	s := jsonScan{b: b}
	if s.peek() != '{' {
		return r, false
	}
	var seen uint32
	s.object(func(key []byte) {
		switch s.member(key, &seen, "usage", "choices", "error", "object", "timings") {
		case 0:
			r.hasUsage = s.objectOrNull(func() { r.usage = s.usage() })
		case 4:
			r.hasTimings = s.objectOrNull(func() { r.timings = s.timings() })
		case 1:
			if s.null() {
				return
			}
			if s.peek() != '[' {
				s.fail = true
				return
			}
			r.choices = 0
			s.array(func() {
				r.choices++
				var n int64
				s.objectOrNull(func() { n = s.choice() })
				r.text += n
				if n > 0 {
					r.tokens++
				}
			})
		case 2:
			r.failed = r.failed || s.textLen() > 0
		case 3:
			r.failed = string(s.plainString()) == "error" || r.failed
		default:
			s.value()
		}
	})
	return r, s.end()
}

// usage reads a usage object.
func (s *jsonScan) usage() Usage {
	u := NoUsage
	var seen uint32
	s.object(func(key []byte) {
		switch s.member(key, &seen, "prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details") {
		case 0:
			u.Prompt = s.count()
		case 1:
			u.Completion = s.count()
		case 2:
			s.objectOrNull(func() { u.Cached = s.detail("cached_tokens") })
		case 3:
			s.objectOrNull(func() { u.Reasoning = s.detail("reasoning_tokens") })
		default:
			s.value()
		}
	})
	return u
}

// timings reads llama-server's timings object.
func (s *jsonScan) timings() Usage {
	promptN, predictedN, cacheN := int64(-1), int64(-1), int64(-1)
	var seen uint32
	s.object(func(key []byte) {
		switch s.member(key, &seen, "prompt_n", "predicted_n", "cache_n") {
		case 0:
			promptN = s.count()
		case 1:
			predictedN = s.count()
		case 2:
			cacheN = s.count()
		default:
			s.value()
		}
	})
	return timingsUsage(promptN, predictedN, cacheN)
}

// detail reads the count name from a details object, -1 when absent.
func (s *jsonScan) detail(name string) int64 {
	n := int64(-1)
	var seen uint32
	s.object(func(key []byte) {
		if s.member(key, &seen, name) == 0 {
			n = s.count()
		} else {
			s.value()
		}
	})
	return n
}

// choice reads the bytes of generated text in one choice.
func (s *jsonScan) choice() int64 {
	return s.sum(func(i int) (n int64) {
		if i == 0 {
			return s.textLen()
		}
		s.objectOrNull(func() { n = s.message() })
		return n
	}, "text", "message", "delta")
}

// message reads the bytes of generated text in a message or delta.
func (s *jsonScan) message() int64 {
	return s.sum(func(int) int64 { return s.textLen() }, "content", "reasoning_content", "reasoning", "tool_calls")
}

// sum reads an object and adds up what read returns for each member named
// in names (called with its index in names; it must pass over the value),
// passing over the other members.
func (s *jsonScan) sum(read func(i int) int64, names ...string) int64 {
	var n int64
	var seen uint32
	s.object(func(key []byte) {
		if i := s.member(key, &seen, names...); i >= 0 {
			n += read(i)
		} else {
			s.value()
		}
	})
	return n
}
