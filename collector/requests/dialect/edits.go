package dialect

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/deadlabour/deadlabour/internal/jsonedit"
)

// MaxIncludeUsageGrowth is the most IncludeUsageEdit adds to a body: a
// whole stream_options member.
const MaxIncludeUsageGrowth = int64(len(`,"stream_options":{"include_usage":true}`))

// Splice is one edit of a document: doc[from:to] replaced by with.
type Splice struct {
	from, to int
	with     string
}

// Apply returns doc edited, in a new slice.
func (e Splice) Apply(doc []byte) []byte { return jsonedit.Splice(doc, e.from, e.to, e.with) }

// IncludeUsageEdit is addIncludeUsage's edit, found but not made, so that
// the proxy can take room for the edited copy in its body budget first.
// body must be valid JSON: the proxy asks only for a request its dialect
// read as streamed, which a body that is not is never (the reader, fast or
// encoding/json, validates the whole body), so it is not checked again.
func IncludeUsageEdit(body []byte) (Splice, bool) {
	members, closing, ok := jsonedit.Members(body, 0)
	if !ok || len(members) == 0 || jsonedit.SkipSpace(body, closing+1) != len(body) {
		return Splice{}, false
	}
	so, ok := jsonedit.Find(body, members, "stream_options")
	if !ok {
		// Insert after the last member: `{..., "stream_options":{...}}`.
		end := members[len(members)-1].Val[1]
		return Splice{end, end, `,"stream_options":{"include_usage":true}`}, true
	}
	val := body[so.Val[0]:so.Val[1]]
	if string(val) == "null" {
		return Splice{so.Val[0], so.Val[1], `{"include_usage":true}`}, true
	}
	inner, innerClose, ok := jsonedit.Members(body, so.Val[0])
	if !ok {
		return Splice{}, false
	}
	iu, ok := jsonedit.Find(body, inner, "include_usage")
	switch {
	case !ok && len(inner) == 0:
		return Splice{so.Val[0] + 1, innerClose, `"include_usage":true`}, true
	case !ok:
		end := inner[len(inner)-1].Val[1]
		return Splice{end, end, `,"include_usage":true`}, true
	}
	switch string(body[iu.Val[0]:iu.Val[1]]) {
	case "false", "null":
		return Splice{iu.Val[0], iu.Val[1], "true"}, true
	}
	return Splice{}, false // true already, or a value the upstream will judge
}

// nullUsage finds a top-level "usage":null member of doc, valid JSON: removing
// doc[from:to] removes it with its comma.
func nullUsage(doc []byte) (from, to int, ok bool) {
	members, _, ok := jsonedit.Members(doc, 0)
	if !ok {
		return 0, 0, false
	}
	i := jsonedit.Index(doc, members, "usage")
	if i < 0 {
		return 0, 0, false
	}
	// jsonedit reads the members, not every value's insides: a chunk that
	// is not valid JSON is passed as it came.
	if m := members[i]; string(doc[m.Val[0]:m.Val[1]]) != "null" || !json.Valid(doc) {
		return 0, 0, false
	}
	from, to = jsonedit.Cut(members, i)
	return from, to, true
}

// NullUsageEvent finds "usage":null in an event that is one data line of
// JSON: removing raw[from:to] removes it. Events of other shapes are left
// as they are (ok false).
func NullUsageEvent(raw []byte) (from, to int, ok bool) { return inDataLine(raw, nullUsage) }

// inDataLine is find's edit of the JSON in an event that is one data line,
// as a range of raw; ok false for events of other shapes, or where find
// finds none.
func inDataLine(raw []byte, find func(doc []byte) (from, to int, ok bool)) (from, to int, ok bool) {
	start, end, ok := dataLine(raw)
	if !ok {
		return 0, 0, false
	}
	if from, to, ok = find(raw[start:end]); !ok {
		return 0, 0, false
	}
	return start + from, start + to, true
}

// dataLine finds the JSON of an event that is one data line: raw[start:end]
// (ok false for events of other shapes).
func dataLine(raw []byte) (start, end int, ok bool) {
	rest, ok := bytes.CutPrefix(raw, []byte("data:"))
	if !ok {
		return 0, 0, false
	}
	start = len(raw) - len(rest)
	if len(rest) > 0 && rest[0] == ' ' {
		start++
	}
	end = bytes.IndexAny(raw[start:], "\r\n")
	if end < 0 {
		end = len(raw)
	} else {
		end += start
	}
	// What follows the data line must be line ends only (one event, one line).
	for _, c := range raw[end:] {
		if c != '\r' && c != '\n' {
			return 0, 0, false
		}
	}
	return start, end, true
}

// UsageChunkEvent is the edit of an event that is an OpenAI usage-only
// chunk (no choices, a usage block), which the proxy asked for and the
// client did not: removing raw[from:to] removes its usage member alone, and
// leaves a chunk the client gets, when the chunk carries anything else;
// whole is true when nothing else is in it and the event goes whole. Nothing
// else: the members every chunk of the stream repeats (id, object, created,
// model, system_fingerprint, service_tier, OpenAI's obfuscation padding) and
// an empty choices. llama-server, asked for usage, moves its timings from
// the last chunk with a choice onto this one: they stay, and reach the
// client. An event that is not one data line of one JSON object with one
// usage member goes whole, as any usage-only chunk did before.
func UsageChunkEvent(raw []byte) (from, to int, whole bool) {
	from, to, ok := inDataLine(raw, usageChunk)
	return from, to, !ok
}

// usageChunk finds the usage member of doc, valid JSON, when doc has members
// other than those every chunk repeats: removing doc[from:to] removes it
// with its comma (ok false: doc goes whole).
func usageChunk(doc []byte) (from, to int, ok bool) {
	members, _, ok := jsonedit.Members(doc, 0)
	if !ok {
		return 0, 0, false
	}
	usage, other := -1, false
	for i, m := range members {
		key := string(doc[m.Key[0]+1 : m.Key[1]-1])
		if strings.IndexByte(key, '\\') >= 0 && json.Unmarshal(doc[m.Key[0]:m.Key[1]], &key) != nil {
			return 0, 0, false
		}
		switch key {
		case "usage":
			if usage >= 0 {
				return 0, 0, false // twice: which one is it?
			}
			usage = i
		case "id", "object", "created", "model", "system_fingerprint", "service_tier", "obfuscation":
		case "choices":
			v := doc[m.Val[0]:m.Val[1]]
			empty := string(v) == "null" || v[0] == '[' && len(bytes.TrimSpace(v[1:len(v)-1])) == 0
			other = other || !empty
		default:
			other = true
		}
	}
	if usage < 0 || !other || !json.Valid(doc) {
		return 0, 0, false
	}
	from, to = jsonedit.Cut(members, usage)
	return from, to, true
}
