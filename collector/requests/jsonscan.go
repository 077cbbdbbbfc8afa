package requests

import "encoding/json"

// A small scanner over the raw bytes of a JSON object, for the two edits the
// proxy makes: adding stream_options.include_usage to a request and removing
// "usage":null from a chunk. Editing the bytes in place (instead of decoding
// and encoding again) keeps every other byte as the client or the upstream
// wrote it: key order, spacing, number formats.

// member is one member of a JSON object: the key's quotes at key[0] and
// key[1]-1, the value at [val[0], val[1]).
type member struct {
	key, val [2]int
}

// isSpace is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index after the string that starts with the quote
// at b[i], or -1 when it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value that starts at b[i] (no
// leading space), or -1 when it is not one. Nested values are matched by
// their brackets only: the upstream's JSON is trusted to be valid inside,
// and a value the scanner cannot match leaves the bytes unedited.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ':' && b[j] != '"' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// objectMembers lists the members of the object that starts at b[start] (after
// any space), and the index of its closing brace. ok is false when b there
// is not a whole object.
func objectMembers(b []byte, start int) (members []member, closing int, ok bool) {
	i := skipSpace(b, start)
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, i, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, 0, false
		}
		var m member
		m.key[0] = i
		if i = skipString(b, i); i < 0 {
			return nil, 0, false
		}
		m.key[1] = i
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		i = skipSpace(b, i+1)
		m.val[0] = i
		if i = skipValue(b, i); i < 0 {
			return nil, 0, false
		}
		m.val[1] = i
		members = append(members, m)
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return members, i, true
		default:
			return nil, 0, false
		}
	}
}

// find returns the member whose key is exactly `"name"` (no escapes: servers
// and SDKs write these keys plainly), and whether there is one. With
// duplicate keys the last one counts, as in encoding/json.
func find(b []byte, members []member, name string) (member, bool) {
	var found member
	ok := false
	for _, m := range members {
		k := b[m.key[0]+1 : m.key[1]-1]
		if string(k) == name {
			found, ok = m, true
		}
	}
	return found, ok
}

// removeMember returns b without member i of members (its key, value and
// one separating comma with the space around it), in a new slice.
func removeMember(b []byte, members []member, i int) []byte {
	from, to := members[i].key[0], members[i].val[1]
	switch {
	case i > 0:
		// `..., "k": v` -> from the end of the previous value.
		from = members[i-1].val[1]
	case len(members) > 1:
		// `"k": v, "next"` -> up to the next key.
		to = members[1].key[0]
	}
	out := make([]byte, 0, len(b)-(to-from))
	out = append(out, b[:from]...)
	return append(out, b[to:]...)
}

// splice returns b with [from, to) replaced by s, in a new slice.
func splice(b []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(s))
	out = append(out, b[:from]...)
	out = append(out, s...)
	return append(out, b[to:]...)
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
	members, closing, ok := objectMembers(body, 0)
	if !ok || len(members) == 0 || skipSpace(body, closing+1) != len(body) {
		return body, false
	}
	so, ok := find(body, members, "stream_options")
	if !ok {
		// Insert after the last member: `{..., "stream_options":{...}}`.
		end := members[len(members)-1].val[1]
		return splice(body, end, end, `,"stream_options":{"include_usage":true}`), true
	}
	val := body[so.val[0]:so.val[1]]
	if string(val) == "null" {
		return splice(body, so.val[0], so.val[1], `{"include_usage":true}`), true
	}
	inner, innerClose, ok := objectMembers(body, so.val[0])
	if !ok {
		return body, false
	}
	iu, ok := find(body, inner, "include_usage")
	switch {
	case !ok && len(inner) == 0:
		return splice(body, so.val[0]+1, innerClose, `"include_usage":true`), true
	case !ok:
		end := inner[len(inner)-1].val[1]
		return splice(body, end, end, `,"include_usage":true`), true
	}
	switch string(body[iu.val[0]:iu.val[1]]) {
	case "false", "null":
		return splice(body, iu.val[0], iu.val[1], "true"), true
	}
	return body, false // true already, or a value the upstream will judge
}

// removeNullUsage returns doc without a top-level "usage":null member, and
// whether there was one.
func removeNullUsage(doc []byte) ([]byte, bool) {
	members, _, ok := objectMembers(doc, 0)
	if !ok {
		return doc, false
	}
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		if string(doc[m.key[0]:m.key[1]]) == `"usage"` {
			if string(doc[m.val[0]:m.val[1]]) != "null" {
				return doc, false
			}
			return removeMember(doc, members, i), true
		}
	}
	return doc, false
}
