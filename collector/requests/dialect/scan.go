package dialect

import "bytes"

// A fast path for the two documents every OpenAI-style request has: the
// request body (model, stream, stream_options) and the answer or chunk
// (usage, choices, error). encoding/json reads them through reflection at
// several microseconds each; jsonScan reads the plain ones in one pass
// without allocating. It gives up — and encoding/json reads the document —
// on anything where the two could read differently: a document that is not
// an object, a member the proxy reads that appears twice or with a key in
// another case or escaped, a value of an unexpected type, a string that
// would need unescaping, nesting deeper than maxScanDepth, or anything
// invalid. FuzzFastJSON holds the two to the same answers.

const maxScanDepth = 64

// jsonScan checks and reads one JSON document. fail is set once it gives
// up; every method then does nothing useful, and the caller's result is
// thrown away.
type jsonScan struct {
	b     []byte
	i     int
	depth int
	fail  bool
}

func (s *jsonScan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte after whitespace, 0 at the end.
func (s *jsonScan) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// end reports whether the document was read whole: one value and
// whitespace after it.
func (s *jsonScan) end() bool {
	s.ws()
	return !s.fail && s.i == len(s.b)
}

// value passes over one value, checking it, and returns its bytes.
func (s *jsonScan) value() []byte {
	c := s.peek()
	start := s.i
	switch {
	case c == '"':
		s.str()
	case c == '{':
		s.object(nil)
	case c == '[':
		s.array(nil)
	case c == '-' || c >= '0' && c <= '9':
		s.number()
	case c == 't' || c == 'f' || c == 'n':
		s.literal()
	default:
		s.fail = true
	}
	if s.fail {
		return nil
	}
	return s.b[start:s.i]
}

// str passes over the string at s.i and reports whether it is plain:
// printable ASCII without escapes, which reads as it is written.
func (s *jsonScan) str() (plain bool) {
	plain = true
	b := s.b
	for i := s.i + 1; i < len(b); i++ {
		c := b[i]
		if !stringSpecial[c] {
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return plain
		case c < 0x20:
			s.fail = true
			return false
		case c == '\\':
			plain = false
			s.i = i
			if !s.escape() {
				s.fail = true
				return false
			}
			i = s.i
		default: // 0x7f and above
			plain = false
		}
	}
	s.fail = true
	return false
}

// stringSpecial are the bytes str must look at; never modified.
var stringSpecial = func() (t [256]bool) {
	for c := range t {
		t[c] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\'
	}
	return t
}()

// escape checks the escape at s.i and leaves s.i on its last byte.
func (s *jsonScan) escape() bool {
	if s.i+1 >= len(s.b) {
		return false
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
		return true
	case 'u':
		if s.i+6 > len(s.b) {
			return false
		}
		for _, h := range s.b[s.i+2 : s.i+6] {
			if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
				return false
			}
		}
		s.i += 5
		return true
	}
	return false
}

func (s *jsonScan) number() {
	b, i := s.b, s.i
	digits := func() {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		digits()
	default:
		s.fail = true
		return
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.fail = true
			return
		}
		digits()
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			s.fail = true
			return
		}
		digits()
	}
	s.i = i
}

func (s *jsonScan) literal() {
	for _, w := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(s.b[s.i:], []byte(w)) {
			s.i += len(w)
			return
		}
	}
	s.fail = true
}

// null passes over a null and reports whether there was one.
func (s *jsonScan) null() bool {
	if s.peek() == 'n' && bytes.HasPrefix(s.b[s.i:], []byte("null")) {
		s.i += 4
		return true
	}
	return false
}

// object passes over the object at s.i (after whitespace). With member
// set, it calls member for every member, with s.i before the value, and
// member must pass over the value; keys must then be plain. A nil member
// passes over the values.
func (s *jsonScan) object(member func(key []byte)) {
	if s.depth++; s.depth > maxScanDepth {
		s.fail = true
		return
	}
	s.i++ // '{'
	if s.peek() == '}' {
		s.i++
		s.depth--
		return
	}
	for !s.fail {
		if s.peek() != '"' {
			s.fail = true
			return
		}
		start := s.i
		plain := s.str()
		end := s.i - 1
		if s.fail || s.peek() != ':' {
			s.fail = true
			return
		}
		key := s.b[start+1 : end]
		s.i++
		switch {
		case member == nil:
			s.value()
		case !plain:
			s.fail = true // an escaped key could name a member
			return
		default:
			member(key)
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return
		default:
			s.fail = true
		}
	}
}

// array passes over the array at s.i (after whitespace), calling elem (if
// set) with s.i before each element; elem must pass over it.
func (s *jsonScan) array(elem func()) {
	if s.depth++; s.depth > maxScanDepth {
		s.fail = true
		return
	}
	s.i++ // '['
	if s.peek() == ']' {
		s.i++
		s.depth--
		return
	}
	for !s.fail {
		if elem == nil {
			s.value()
		} else {
			elem()
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return
		default:
			s.fail = true
		}
	}
}

// member returns which of names key is, or -1. It gives up on a key that
// encoding/json would match to a name other than exactly (in another case)
// and on a name seen before (encoding/json merges a repeated object).
// seen has a bit per name.
func (s *jsonScan) member(key []byte, seen *uint32, names ...string) int {
	for n, name := range names {
		switch {
		case string(key) == name:
			if *seen&(1<<n) != 0 {
				s.fail = true
				return -1
			}
			*seen |= 1 << n
			return n
		case foldedEqual(key, name):
			s.fail = true
			return -1
		}
	}
	return -1
}

// foldedEqual reports whether the ASCII key equals name but for the case
// of its letters.
func foldedEqual(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range len(key) {
		k, n := key[i], name[i]
		if k != n && (k|0x20 != n|0x20 || k|0x20 < 'a' || k|0x20 > 'z') {
			return false
		}
	}
	return true
}

// boolean reads true or false into v and leaves v for null, as
// encoding/json does; any other value gives up.
func (s *jsonScan) boolean(v *bool) {
	switch s.peek() {
	case 't', 'f':
		raw := s.value()
		*v = string(raw) == "true"
	case 'n':
		if !s.null() {
			s.fail = true
		}
	default:
		s.fail = true
	}
}

// plainString reads a plain string, and null as empty; any other value
// gives up.
func (s *jsonScan) plainString() []byte {
	switch s.peek() {
	case '"':
		start := s.i
		if !s.str() {
			s.fail = true
			return nil
		}
		return s.b[start+1 : s.i-1]
	case 'n':
		if !s.null() {
			s.fail = true
		}
	default:
		s.fail = true
	}
	return nil
}

// objectOrNull calls read for an object value and reports whether there
// was one; null is none; any other value gives up.
func (s *jsonScan) objectOrNull(read func()) bool {
	switch s.peek() {
	case '{':
		read()
		return true
	case 'n':
		if !s.null() {
			s.fail = true
		}
	default:
		s.fail = true
	}
	return false
}

// textLen reads a value as the type textLen does.
func (s *jsonScan) textLen() int64 {
	var t textLen
	_ = t.UnmarshalJSON(s.value())
	return int64(t)
}

// count reads a token count as a *tokens field does: -1 for null.
func (s *jsonScan) count() int64 {
	if s.null() {
		return -1
	}
	var t tokens
	_ = t.UnmarshalJSON(s.value())
	return int64(t)
}
