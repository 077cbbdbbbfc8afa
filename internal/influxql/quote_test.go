package influxql

import "testing"

func TestQuote(t *testing.T) {
	for _, c := range []struct{ in, ident, str string }{
		{`gpu_energy_j`, `"gpu_energy_j"`, `'gpu_energy_j'`},
		{`a"b'c\d`, `"a\"b'c\\d"`, `'a"b\'c\\d'`},
		{`meta-llama/Llama-3.1-70B`, `"meta-llama/Llama-3.1-70B"`, `'meta-llama/Llama-3.1-70B'`},
	} {
		if got := QuoteIdent(c.in); got != c.ident {
			t.Errorf("QuoteIdent(%q) = %s, want %s", c.in, got, c.ident)
		}
		if got := QuoteString(c.in); got != c.str {
			t.Errorf("QuoteString(%q) = %s, want %s", c.in, got, c.str)
		}
	}
}
