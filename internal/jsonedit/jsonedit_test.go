package jsonedit

import "testing"

// TestCut: removing a member cuts exactly its bytes and one comma, keeping
// every other byte.
func TestCut(t *testing.T) {
	tests := []struct{ in, key, want string }{
		{`{"a":1,"stream_options":{"include_usage":true}}`, "stream_options", `{"a":1}`},
		{`{"stream_options":null, "a":1}`, "stream_options", `{"a":1}`},
		{`{ "a" : [1,{"stream_options":2}] , "b": "x\"}" }`, "b", `{ "a" : [1,{"stream_options":2}] }`},
		{`{"only":true}`, "only", `{}`},
		{`{"a":1}`, "b", `{"a":1}`},
		{`[1]`, "a", `[1]`},
		{`{"a":`, "a", `{"a":`},
	}
	for _, tt := range tests {
		if got := removeKey([]byte(tt.in), tt.key); string(got) != tt.want {
			t.Errorf("removing %s from %s = %s, want %s", tt.key, tt.in, got, tt.want)
		}
	}
}

// removeKey removes the last top-level member named name with Cut.
func removeKey(b []byte, name string) []byte {
	members, _, ok := Members(b, 0)
	if !ok {
		return b
	}
	i := Index(b, members, name)
	if i < 0 {
		return b
	}
	from, to := Cut(members, i)
	return Splice(b, from, to, "")
}
