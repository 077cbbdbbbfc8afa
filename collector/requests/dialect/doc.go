// Package dialect reads the bodies of inference requests and responses as
// the metering proxy (package requests) sees them pass: the model a request
// names and whether it streams, and what an answer or one streamed event
// says of token counts, generated output and errors. It also finds the
// proxy's two JSON edits (IncludeUsageEdit, NullUsageEvent). Everything here
// is a pure function of bytes: no I/O, no state.
//
// Dialects (see Endpoints): OpenAI-compatible chat completions, completions
// and embeddings (vLLM, SGLang, TGI, llama.cpp and Ollama under /v1);
// Ollama's /api/chat and /api/generate (NDJSON); TGI's /generate and
// /generate_stream; llama.cpp's /completion.
//
// OpenAI-style documents, read on every request and chunk, go through a
// one-pass reader (jsonScan) that gives up to encoding/json on anything
// unusual; FuzzFastJSON holds the two to the same answers.
package dialect
