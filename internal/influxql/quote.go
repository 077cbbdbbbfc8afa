// Package influxql quotes identifiers and string literals for InfluxQL, for
// the report's queries and the tests' alike.
package influxql

import "strings"

var (
	identEscaper  = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	stringEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`)
)

// QuoteIdent quotes an identifier (measurement, tag or field key).
func QuoteIdent(s string) string { return `"` + identEscaper.Replace(s) + `"` }

// QuoteString quotes a string literal (a tag or field value in WHERE).
func QuoteString(s string) string { return `'` + stringEscaper.Replace(s) + `'` }
