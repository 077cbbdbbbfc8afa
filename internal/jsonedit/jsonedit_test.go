package jsonedit

import "testing"

func TestRemoveKey(t *testing.T) {
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
		got, _ := RemoveKey([]byte(tt.in), tt.key)
		if string(got) != tt.want {
			t.Errorf("RemoveKey(%s, %s) = %s, want %s", tt.in, tt.key, got, tt.want)
		}
	}
}
