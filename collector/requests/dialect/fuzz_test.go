package dialect

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// Seed corpora are in testdata/fuzz/Fuzz*; `go test` runs them,
// `go test -fuzz FuzzJSONEdit` explores from them.

// FuzzJSONEdit: the edits of the proxy keep a document valid JSON, change
// only what they mean to, and never touch what they cannot read.
func FuzzJSONEdit(f *testing.F) {
	f.Add([]byte(`{"model":"m","stream":true,"messages":[]}`))
	f.Add([]byte(`{"choices":[],"created":1,"id":"x","model":"m","object":"chat.completion.chunk","timings":{"cache_n":1},"usage":{"prompt_tokens":2}}`))
	f.Add([]byte(`{"id":"x","choices":[ ],"usage":{"prompt_tokens":2},"system_fingerprint":"b1"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var before map[string]any
		valid := json.Unmarshal(body, &before) == nil && before != nil
		if out, ok := addIncludeUsage(body); ok {
			if !valid {
				t.Fatalf("edited a body that is not a JSON object: %q -> %q", body, out)
			}
			var after map[string]any
			if err := json.Unmarshal(out, &after); err != nil {
				t.Fatalf("edit broke the JSON: %q -> %q: %v", body, out, err)
			}
			so, _ := after["stream_options"].(map[string]any)
			if so == nil || so["include_usage"] != true {
				t.Fatalf("no include_usage in %q", out)
			}
			delete(after, "stream_options")
			wantSO, _ := before["stream_options"].(map[string]any)
			delete(before, "stream_options")
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("other members changed: %q -> %q", body, out)
			}
			delete(so, "include_usage")
			if wantSO != nil {
				delete(wantSO, "include_usage")
				if !reflect.DeepEqual(so, wantSO) {
					t.Fatalf("stream_options changed beyond include_usage: %q -> %q", body, out)
				}
			}
		} else if !bytes.Equal(out, body) {
			t.Fatal("an unedited body changed")
		}
		if from, to, ok := usageChunk(body); ok {
			// Only the usage member goes, and something the stream does
			// not repeat on every chunk stays.
			out := append(body[:from:from], body[to:]...)
			var before, after map[string]any
			if json.Unmarshal(body, &before) != nil || json.Unmarshal(out, &after) != nil {
				t.Fatalf("usage chunk edit of %q gave %q: want both valid JSON objects", body, out)
			}
			if _, had := before["usage"]; !had {
				t.Fatalf("usage chunk edit of %q: no usage in it", body)
			}
			delete(before, "usage")
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("usage chunk edit changed other members: %q -> %q", body, out)
			}
			if !keepsSomething(out) {
				t.Fatalf("usage chunk edit kept %q, which holds nothing but what every chunk repeats", out)
			}
		}
		if from, to, ok := nullUsage(body); ok {
			out := append(body[:from:from], body[to:]...)
			var after map[string]any
			if err := json.Unmarshal(out, &after); err != nil || !valid {
				t.Fatalf("edit broke the JSON: %q -> %q: %v", body, out, err)
			}
			if v, had := before["usage"]; !had || v != nil {
				t.Fatalf("removed a usage that was not null: %q", body)
			}
			delete(before, "usage")
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("other members changed: %q -> %q", body, out)
			}
		}
	})
}

// keepsSomething reports whether a chunk, the usage member taken out, has a
// member other than those every chunk of a stream repeats, or choices.
func keepsSomething(doc []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(doc, &m) != nil {
		return false
	}
	for k, v := range m {
		switch k {
		case "id", "object", "created", "model", "system_fingerprint", "service_tier", "obfuscation":
		case "choices":
			var c []json.RawMessage
			if json.Unmarshal(v, &c) != nil || len(c) > 0 {
				return true
			}
		default:
			return true
		}
	}
	return false
}

// FuzzFastJSON: whatever the fast reader of OpenAI requests and answers
// reads, it reads as encoding/json does (it may give up, never differ).
func FuzzFastJSON(f *testing.F) {
	for _, s := range []string{
		benchChat, benchStream, benchAnswer, benchChunk,
		`{"model":"m","stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true}}`,
		`{"model":"m","stream":null,"stream_options":null}`,
		`{"model":"m","Model":"n"}`, `{"model":"m","model":"n"}`, `{"mod\u0065l":"m"}`, `{"model":"\u00e9"}`,
		`{"stream":"yes"}`, `{"stream_options":[]}`, ` {"model" : "m" } `, `{"model":"m"}x`, `[1]`, `null`,
		`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
		`{"choices":[null,{"text":"abc"},{"delta":{"content":"","reasoning_content":"x","tool_calls":[{"a":1}]}}],"usage":null}`,
		`{"usage":{"prompt_tokens":-1,"completion_tokens":2.0,"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":"3"}}}`,
		`{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":null}},"usage":{"completion_tokens":2}}`,
		`{"choices":[],"timings":{"prompt_n":3,"cache_n":4,"predicted_n":5},"usage":{"prompt_tokens":7}}`,
		`{"timings":{"prompt_n":9223372036854775807,"cache_n":1}}`, `{"timings":null,"Timings":{}}`, `{"timings":{"prompt_n":1,"prompt_n":2}}`,
		`{"Usage":{"prompt_tokens":1}}`, `{"usage":{"PROMPT_TOKENS":1}}`, `{"error":{"message":"x"},"object":"error"}`,
		`{"object":"err\u006fr"}`, `{"choices":{"text":"x"}}`, `{"choices":[1]}`, `{"usage":5}`,
		`{"a":[[[[[[[[{"b":-0.5e+7}]]]]]]]],"c":"\ud800\"\\\/\b\f\n\r\t","d":true,"e":false,"f":null}`,
		`{"a":01}`, `{"a":1.}`, `{"a":"` + "\x01" + `"}`, `{"a":"\x"}`, `{"a":tru}`, `{"a":1,}`, `{,}`, `{"a" 1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, ok := fastOpenAIRequest(b); ok {
			if want := openAIRequestJSON(b); got != want {
				t.Fatalf("request %q: fast %+v, encoding/json %+v", b, got, want)
			}
		}
		if got, ok := fastOpenAIDocument(b); ok {
			want, valid := openAIReadJSON(b)
			if !valid || got != want {
				t.Fatalf("document %q: fast %+v, encoding/json %+v (valid %v)", b, got, want, valid)
			}
		}
	})
}

// addIncludeUsage returns a streamed request's body with
// stream_options.include_usage set to true, and whether it changed it. It
// leaves the body alone (false) when the client asked for usage itself, when
// the body is not an object, or when stream_options is not an object or
// null: then the upstream answers the request exactly as the client sent it.
func addIncludeUsage(body []byte) ([]byte, bool) {
	if !json.Valid(body) {
		return body, false
	}
	e, ok := IncludeUsageEdit(body)
	if !ok {
		return body, false
	}
	return e.Apply(body), true
}
