// Package fakeupstream is a small, deterministic inference server for tests,
// demos and benchmarks, speaking the OpenAI-compatible API and the native
// APIs of Ollama, TGI and llama.cpp. It generates no text worth reading: the
// answer to a request is a function of the request's bytes alone (less its
// stream_options, so that a request a proxy gave include_usage gets the same
// text), so two servers with the same Options answer the same request byte
// for byte.
//
// Served paths:
//
//	POST /v1/chat/completions   OpenAI, streamed (SSE) or not
//	POST /v1/completions        OpenAI, streamed (SSE) or not
//	POST /v1/embeddings         OpenAI, never streamed
//	POST /api/chat              Ollama, streamed (NDJSON, the default) or not
//	POST /api/generate          Ollama, streamed (NDJSON, the default) or not
//	POST /generate              TGI, whole; counts in X-Prompt-Tokens and X-Generated-Tokens
//	POST /generate_stream       TGI, SSE; counts in the last event's details
//	POST /completion            llama.cpp, streamed (SSE) or not
//	GET  /v1/models             the configured model list
//	GET  /health                200, empty body
//
// Token arithmetic (documented so that tests can predict it):
//
//   - prompt tokens: ceil(bytes of prompt text / 4), plus 3 per chat message,
//     at least 1 (prompt text: messages' content, prompt, input, inputs);
//   - cached tokens: half the prompt tokens, rounded down;
//   - completion tokens: max_completion_tokens, max_tokens, Ollama's
//     options.num_predict, TGI's parameters.max_new_tokens or llama.cpp's
//     n_predict, else Options.DefaultMaxTokens; embeddings: none;
//   - reasoning tokens: half the completion tokens when the request sets
//     reasoning_effort, else 0.
//
// A stream carries one event (or NDJSON line) per generated token.
//
// Pacing: by default the tokens of a request come Options.TokenDelay apart,
// whatever else the fake is doing. With Options.Batch the fake paces as a
// continuous-batching server (vLLM, TGI, SGLang) does: every request being
// generated advances one token per decode step, and a step takes longer the
// more requests share it, so the aggregate token rate grows with concurrency
// and each request's own rate falls (Batching).
//
// Usage reporting follows Options.Usage:
//
//   - UsageReported: as the real servers do. OpenAI: usage in whole answers;
//     in a stream only when the request sets stream_options.include_usage
//     (then every chunk has "usage":null and a last chunk with no choices
//     has the usage). Ollama: prompt_eval_count and eval_count in the last
//     line. TGI: headers on /generate, details in the last event of
//     /generate_stream when parameters.details is true. llama.cpp:
//     tokens_evaluated, tokens_predicted and timings in the last event.
//   - UsageOmitted: no counts anywhere.
//   - UsageCumulative: OpenAI and llama.cpp streams carry the counts so far
//     on every chunk (as vLLM's continuous usage and newer llama.cpp do),
//     the OpenAI usage chunk still only when asked for; Ollama leaves out
//     prompt_eval_count (as it does when the prompt was cached); TGI as
//     UsageReported.
//
// Quirks of real servers, each off by default (LlamaServer turns on those of
// llama.cpp's llama-server):
//
//   - Timings: llama.cpp's timings object (cache_n, prompt_n, predicted_n,
//     and their times) in OpenAI-style answers: beside the usage of a whole
//     answer; in a stream, on the finish_reason chunk, or, when the request
//     set include_usage, on the usage chunk instead; and no "usage":null on
//     the other chunks. As llama-server (b10573) does.
//   - TerminatorDelay: a stream's chunked terminator comes in a write of its
//     own, this long after the stream's last event. llama-server writes it
//     separately just after [DONE]; an SDK that hangs up at [DONE] (the
//     OpenAI SDKs do) is gone before it comes.
//   - CloseAfterStream: this long after a stream ends, the connection is
//     closed, and a request sent on it meanwhile is never read, although the
//     response said keep-alive. llama-server closes every connection a few
//     milliseconds after a stream; a client that pools connections writes
//     its next request onto one being closed now and then.
package fakeupstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UsageMode says how the fake reports token counts (see the package doc).
type UsageMode int

const (
	UsageReported UsageMode = iota
	UsageOmitted
	UsageCumulative
)

// Failure is a way for the fake to fail after Options.FailAfter tokens.
type Failure int

const (
	FailNone Failure = iota
	// FailCut drops the connection: mid-stream, or halfway through a whole
	// answer's body.
	FailCut
	// FailErrorEvent sends an error object in the dialect's shape inside the
	// 200 stream, then ends the stream. Whole answers are not affected.
	FailErrorEvent
	// FailStall stops writing until the request's context ends: a stream
	// after FailAfter tokens, a whole answer before its headers.
	FailStall
)

// Options shape the fake's answers. The zero value answers at once with
// DefaultMaxTokens tokens.
type Options struct {
	// TokenDelay is the pause between two generated tokens (none before the
	// first). A non-streamed answer waits the whole generation before it is
	// sent, as a real server does.
	TokenDelay time.Duration
	// Batch, when set, paces generation as continuous batching does and
	// TokenDelay is ignored (Batching).
	Batch *Batching
	// DefaultMaxTokens is the completion length of a request that names none
	// (default 16).
	DefaultMaxTokens int
	// Models is what GET /v1/models lists (default ["fake-model"]). Requests
	// for any model are answered.
	Models []string
	// Created is the "created" timestamp written in every answer (default
	// 1700000000), fixed so that answers stay byte-for-byte reproducible.
	Created int64
	// Usage says how token counts are reported.
	Usage UsageMode
	// Fail and FailAfter make every answer fail after FailAfter tokens.
	Fail      Failure
	FailAfter int
	// Gzip compresses answers for requests that accept gzip.
	Gzip bool
	// Timings, TerminatorDelay and CloseAfterStream are quirks of real
	// servers (see the package doc and LlamaServer).
	Timings          bool
	TerminatorDelay  time.Duration
	CloseAfterStream time.Duration
	// OnEvent, if set, is called after each streamed event is flushed, with
	// the request's X-Request-Id and the event's index (benchmarks).
	OnEvent func(requestID string, event int)
	// Logger receives the HTTP server's own error lines (default: discarded).
	Logger *slog.Logger
}

// LlamaServer is o with the quirks of llama.cpp's llama-server as observed
// at release b10573 (REFERENCE.md): timings in its answers, the chunked
// terminator 2 ms after a stream's last event, the connection closed 5 ms
// after every stream.
func LlamaServer(o Options) Options {
	o.Timings = true
	o.TerminatorDelay = 2 * time.Millisecond
	o.CloseAfterStream = 5 * time.Millisecond
	return o
}

// Batching is the pacing of a continuous-batching server: one decode step
// gives every request in the batch its next token, and a step takes
// StepBase + b × StepPerRequest with b requests in the batch (the weights
// are read once per step; each request adds its own KV-cache reads and
// compute). A request's first token comes one step plus PrefillPerToken per
// prompt token after it arrives. The batch is every request the fake is
// generating for (streamed or whole), so a Server is one model on one set of
// GPUs. The pacing keeps to its schedule: a token that comes late because the
// process was descheduled is followed by the next one early, so the token rate
// stays the model's on a busy machine.
type Batching struct {
	StepBase, StepPerRequest time.Duration
	PrefillPerToken          time.Duration
}

// Step is the time of one decode step with b requests in the batch.
func (b Batching) Step(n int) time.Duration {
	return b.StepBase + time.Duration(max(n, 1))*b.StepPerRequest
}

// TokensPerSecond is the aggregate decode rate with n requests in the batch.
func (b Batching) TokensPerSecond(n int) float64 {
	return float64(max(n, 1)) / b.Step(n).Seconds()
}

// Counts is what the fake sent for one model.
type Counts struct {
	Requests         int64 // requests answered with 200
	Streamed         int64 // of which streamed
	PromptTokens     int64
	CompletionTokens int64 // tokens written to the client
	CachedTokens     int64
	ReasoningTokens  int64
	UsageReported    int64 // answers that carried a usage block
}

// Server is the fake's http.Handler; Start also puts it on a loopback port.
type Server struct {
	opts  Options
	words []string

	mu   sync.Mutex
	sent map[string]Counts

	batch atomic.Int64 // requests being generated (Options.Batch)

	// Set by Start only.
	url       string
	srv       *http.Server
	cancel    context.CancelFunc
	stopAfter func() bool
	serveErr  chan error
	closeOnce sync.Once
	closeErr  error

	// Connections taken from net/http to end them as CloseAfterStream says;
	// Close waits for them, and none is taken once it has begun.
	hijackMu sync.Mutex
	closing  bool
	hijacked sync.WaitGroup
}

// New returns the fake as a plain handler (for httptest or a listener of
// your own).
func New(opts Options) *Server {
	if opts.DefaultMaxTokens <= 0 {
		opts.DefaultMaxTokens = 16
	}
	if len(opts.Models) == 0 {
		opts.Models = []string{"fake-model"}
	}
	if opts.Created == 0 {
		opts.Created = 1700000000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, words: strings.Fields(vocabulary), sent: make(map[string]Counts)}
}

// Start serves a new fake on 127.0.0.1 on a free port until ctx is done or
// Close is called. Close must be called in either case: it waits for the
// server's goroutines.
func Start(ctx context.Context, opts Options) (*Server, error) {
	return StartOn(ctx, "127.0.0.1:0", opts)
}

// StartOn is Start on a given address (benchmarks, which need a known port).
func StartOn(ctx context.Context, addr string, opts Options) (*Server, error) {
	s := New(opts)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakeupstream: listen: %w", err)
	}
	// Every handler's context derives from base, so Close ends streams that
	// are still pacing their tokens instead of waiting for them.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.url = "http://" + ln.Addr().String()
	s.cancel = cancel
	s.srv = &http.Server{
		Handler:           s,
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn),
	}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	s.stopAfter = context.AfterFunc(ctx, cancel)
	return s, nil
}

// URL is the base URL of a started fake ("http://127.0.0.1:PORT"), empty for
// one made with New.
func (s *Server) URL() string { return s.url }

// Close stops a started fake and waits for its goroutines. It is safe to call
// more than once, and does nothing for a fake made with New.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		s.stopAfter()
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if err != nil {
			err = errors.Join(err, s.srv.Close())
		}
		if serr := <-s.serveErr; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		s.hijackMu.Lock()
		s.closing = true
		s.hijackMu.Unlock()
		s.hijacked.Wait()
		s.closeErr = err
	})
	return s.closeErr
}

// Batch is the number of requests the fake is generating for now.
func (s *Server) Batch() int { return int(s.batch.Load()) }

// Sent returns a copy of what the fake has sent so far, per model.
func (s *Server) Sent() map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.sent)
}

func (s *Server) count(model string, add Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.sent[model]
	c.Requests += add.Requests
	c.Streamed += add.Streamed
	c.PromptTokens += add.PromptTokens
	c.CompletionTokens += add.CompletionTokens
	c.CachedTokens += add.CachedTokens
	c.ReasoningTokens += add.ReasoningTokens
	c.UsageReported += add.UsageReported
	s.sent[model] = c
}

// ServeHTTP answers the paths listed in the package documentation.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Echo the request id as vLLM does with --enable-request-id-headers, so
	// that a test can see which id reached the upstream.
	if id := r.Header.Get("X-Request-Id"); id != "" {
		w.Header().Set("X-Request-Id", id)
	}
	if k, ok := paths[r.URL.Path]; ok {
		s.complete(w, r, k)
		return
	}
	switch r.URL.Path {
	case "/v1/models":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		s.models(w)
	case "/health":
		w.WriteHeader(http.StatusOK)
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

// sleep waits d or until ctx ends, and reports whether the whole wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pacer times the tokens of one answer: TokenDelay apart, or one batched
// decode step apart (Options.Batch).
type pacer struct {
	s      *Server
	prompt int64
	next   time.Time // the batched schedule: when the last token was due
}

// pace starts the pacing of an answer with prompt tokens; done must be
// called when the answer is over (it leaves the batch).
func (s *Server) pace(prompt int64) (p *pacer, done func()) {
	p = &pacer{s: s, prompt: prompt}
	if s.opts.Batch == nil {
		return p, func() {}
	}
	s.batch.Add(1)
	p.next = time.Now()
	return p, func() { s.batch.Add(-1) }
}

// token waits until token i (from 0) is generated, and reports whether ctx
// let it.
func (p *pacer) token(ctx context.Context, i int64) bool {
	b := p.s.opts.Batch
	if b == nil {
		return i == 0 || sleep(ctx, p.s.opts.TokenDelay)
	}
	step := b.Step(p.s.Batch())
	if i == 0 {
		step += time.Duration(p.prompt) * b.PrefillPerToken
	}
	p.next = p.next.Add(step)
	return sleep(ctx, time.Until(p.next))
}
