package requests

import (
	"encoding/json"

	"github.com/deadlabour/deadlabour/internal/jsonedit"
)

// addIncludeUsage returns a streamed request's body with
// stream_options.include_usage set to true, and whether it changed it. It
// leaves the body alone (false) when the client asked for usage itself, when
// the body is not an object, or when stream_options is not an object or
// null: then the upstream answers the request exactly as the client sent it.
func addIncludeUsage(body []byte) ([]byte, bool) {
	if !json.Valid(body) {
		return body, false
	}
	e, ok := includeUsageEdit(body)
	if !ok {
		return body, false
	}
	return e.apply(body), true
}

// maxIncludeUsageGrowth is the most includeUsageEdit adds to a body: a
// whole stream_options member.
const maxIncludeUsageGrowth = int64(len(`,"stream_options":{"include_usage":true}`))

// splice is one edit of a document: doc[from:to] replaced by with.
type splice struct {
	from, to int
	with     string
}

// apply returns doc edited, in a new slice.
func (e splice) apply(doc []byte) []byte { return jsonedit.Splice(doc, e.from, e.to, e.with) }

// includeUsageEdit is addIncludeUsage's edit, found but not made, so that
// the proxy can take room for the edited copy in its body budget first.
// body must be valid JSON: the proxy asks only for a request its dialect
// read as streamed, which a body that is not is never (the reader, fast or
// encoding/json, validates the whole body), so it is not checked again.
func includeUsageEdit(body []byte) (splice, bool) {
	members, closing, ok := jsonedit.Members(body, 0)
	if !ok || len(members) == 0 || jsonedit.SkipSpace(body, closing+1) != len(body) {
		return splice{}, false
	}
	so, ok := jsonedit.Find(body, members, "stream_options")
	if !ok {
		// Insert after the last member: `{..., "stream_options":{...}}`.
		end := members[len(members)-1].Val[1]
		return splice{end, end, `,"stream_options":{"include_usage":true}`}, true
	}
	val := body[so.Val[0]:so.Val[1]]
	if string(val) == "null" {
		return splice{so.Val[0], so.Val[1], `{"include_usage":true}`}, true
	}
	inner, innerClose, ok := jsonedit.Members(body, so.Val[0])
	if !ok {
		return splice{}, false
	}
	iu, ok := jsonedit.Find(body, inner, "include_usage")
	switch {
	case !ok && len(inner) == 0:
		return splice{so.Val[0] + 1, innerClose, `"include_usage":true`}, true
	case !ok:
		end := inner[len(inner)-1].Val[1]
		return splice{end, end, `,"include_usage":true`}, true
	}
	switch string(body[iu.Val[0]:iu.Val[1]]) {
	case "false", "null":
		return splice{iu.Val[0], iu.Val[1], "true"}, true
	}
	return splice{}, false // true already, or a value the upstream will judge
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
