// Package jsonedit edits the raw bytes of a JSON object member by member,
// for the metering proxy's two edits: adding stream_options.include_usage to
// a request, removing "usage":null from a chunk. Editing the bytes in place,
// instead of decoding and encoding again, keeps every other byte as it was
// written: key order, spacing, number formats.
//
// Why not github.com/tidwall/sjson (v1.2.9, with gjson v1.20.2), which also
// edits JSON bytes in place? Evaluated 2026-11-27 with both edits rewritten on it; the tests
// passed, but:
//
//   - With a key given twice it reads and edits the first member, where the
//     upstreams' decoders (Python's json, Go's encoding/json) keep the last:
//     for {"stream_options":null,"stream_options":{"include_usage":false}}
//     it sets the first, the upstream reads false and sends no usage. Here
//     the last member counts, as upstream.
//   - Deleting a first member leaves the space after its comma:
//     {"usage":null, "id":1} became { "id":1} where an upstream that
//     never wrote usage sends {"id":1}, and the client's bytes would differ
//     from a direct call. It also drops the space around the whole document
//     when it adds a member.
//   - It is about twice as slow on the hot path: removing "usage":null from
//     a chunk (every chunk of a stream the proxy asked usage for) took
//     658 ns and 3 allocations against 327 ns and 1, adding include_usage
//     1 102 ns and 11 allocations against 524 ns and 2
//     (collector/requests BenchmarkRemoveNullUsage, BenchmarkAddIncludeUsage,
//     which keep the sjson versions); a whole streamed request, with both
//     edits on sjson, took 1.09 times as long (a prototype, not kept:
//     docs/benchmarks.md, "Metering proxy").
package jsonedit

// Member is one member of a JSON object: the key's quotes at Key[0] and
// Key[1]-1, the value at [Val[0], Val[1]).
type Member struct {
	Key, Val [2]int
}

// isSpace is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func SkipSpace(b []byte, i int) int {
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

// Members lists the members of the object that starts at b[start] (after
// any space), and the index of its closing brace. ok is false when b there
// is not a whole object.
func Members(b []byte, start int) (members []Member, closing int, ok bool) {
	i := SkipSpace(b, start)
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	i = SkipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, i, true
	}
	members = make([]Member, 0, 8) // a chunk of a stream has about as many
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, 0, false
		}
		var m Member
		m.Key[0] = i
		if i = skipString(b, i); i < 0 {
			return nil, 0, false
		}
		m.Key[1] = i
		i = SkipSpace(b, i)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		i = SkipSpace(b, i+1)
		m.Val[0] = i
		if i = skipValue(b, i); i < 0 {
			return nil, 0, false
		}
		m.Val[1] = i
		members = append(members, m)
		i = SkipSpace(b, i)
		if i >= len(b) {
			return nil, 0, false
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
		case '}':
			return members, i, true
		default:
			return nil, 0, false
		}
	}
}

// Find returns the member whose key is exactly `"name"` (no escapes: servers
// and SDKs write these keys plainly), and whether there is one. With
// duplicate keys the last one counts, as in encoding/json.
func Find(b []byte, members []Member, name string) (Member, bool) {
	if i := Index(b, members, name); i >= 0 {
		return members[i], true
	}
	return Member{}, false
}

// Index is the index in members of the member Find returns, -1 when there
// is none: what Cut takes.
func Index(b []byte, members []Member, name string) int {
	for i := len(members) - 1; i >= 0; i-- {
		m := members[i]
		if string(b[m.Key[0]+1:m.Key[1]-1]) == name {
			return i
		}
	}
	return -1
}

// Cut is the range [from, to) of the object's bytes to drop to remove
// member i: its key, value and one separating comma with the space around
// it.
func Cut(members []Member, i int) (from, to int) {
	from, to = members[i].Key[0], members[i].Val[1]
	switch {
	case i > 0:
		// `..., "k": v` -> from the end of the previous value.
		from = members[i-1].Val[1]
	case len(members) > 1:
		// `"k": v, "next"` -> up to the next key.
		to = members[1].Key[0]
	}
	return from, to
}

// Splice returns b with [from, to) replaced by s, in a new slice.
func Splice(b []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(s))
	out = append(out, b[:from]...)
	out = append(out, s...)
	return append(out, b[to:]...)
}
