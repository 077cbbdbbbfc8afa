package schema

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/schematest"
)

func fieldType(v any) FieldType {
	switch v.(type) {
	case float64:
		return Float
	case int64:
		return Integer
	case string:
		return String
	case bool:
		return Boolean
	}
	panic(v)
}

func describe(fs []Field) []RequestField {
	out := make([]RequestField, len(fs))
	for i, f := range fs {
		out[i] = RequestField{Name: f.Key, Type: fieldType(f.Value)}
	}
	return out
}

func namesAndTypes(fs []RequestField, keep func(RequestField) bool) []RequestField {
	var out []RequestField
	for _, f := range fs {
		if keep(f) {
			out = append(out, RequestField{Name: f.Name, Type: f.Type})
		}
	}
	return out
}

// TestRequestFields holds RequestFields to what RequestSchema.Point writes:
// a record that knows everything has every field, in order and of its type;
// one that knows nothing optional has exactly the fields not Optional.
func TestRequestFields(t *testing.T) {
	s := NewRequestSchema([]string{"configured"}, "EUR")
	r := schematest.Record() // its model is not configured: model_raw
	r.Namespace, r.Pod = "llm", "vllm-70b-0"
	r.Recovered = true
	p, err := s.Point(r)
	if err != nil {
		t.Fatal(err)
	}
	all := func(RequestField) bool { return true }
	if got, want := describe(p.Fields), namesAndTypes(RequestFields(), all); !slices.Equal(got, want) {
		t.Errorf("a full record's fields =\n%v\nwant RequestFields\n%v", got, want)
	}

	r.Model = "configured"
	r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.ReasoningTokens = -1, -1, -1, -1
	r.FirstToken = time.Time{}
	r.Namespace, r.Pod, r.Recovered = "", "", false
	r.HasMarketCarbon, r.HasTrainingCO2e, r.HasTrainingEnergy, r.HasLivingLabour = false, false, false, false
	if p, err = s.Point(r); err != nil {
		t.Fatal(err)
	}
	required := func(f RequestField) bool { return !f.Optional }
	if got, want := describe(p.Fields), namesAndTypes(RequestFields(), required); !slices.Equal(got, want) {
		t.Errorf("a record knowing nothing optional has fields =\n%v\nwant the RequestFields not Optional\n%v", got, want)
	}

	for _, f := range RequestFields() {
		number := f.Type == Float || f.Type == Integer
		if number != (f.Unit != "") || f.Sums && !number {
			t.Errorf("%s: a %s with unit %q, sums %v: want a unit for numbers only, and only numbers summed", f.Name, f.Type, f.Unit, f.Sums)
		}
	}
}

// TestSchemaDocListsRequestFields: the deadlabour_request field table of
// docs/schema.md names exactly the fields of RequestFields, each with its type.
func TestSchemaDocListsRequestFields(t *testing.T) {
	doc, err := os.ReadFile("../docs/schema.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "\n## `"+MeasurementRequest+"`")
	if start < 0 {
		t.Fatalf("docs/schema.md has no section ## `%s`", MeasurementRequest)
	}
	section = section[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	documented := map[string]string{}
	inFields := false
	name := regexp.MustCompile("`([a-z0-9_]+)`")
	for line := range strings.Lines(section) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		switch {
		case strings.HasPrefix(line, "| field | type |"):
			inFields = true
		case !strings.HasPrefix(line, "|"):
			inFields = false
		case inFields && len(cells) > 3 && !strings.HasPrefix(cells[1], "---"):
			for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
				documented[m[1]] = strings.TrimSpace(cells[2])
			}
		}
	}
	for _, f := range RequestFields() {
		typ, ok := documented[f.Name]
		switch {
		case !ok:
			t.Errorf("docs/schema.md does not list the request field %s", f.Name)
		case typ != f.Type.String():
			t.Errorf("docs/schema.md gives %s the type %s, RequestFields %s", f.Name, typ, f.Type)
		}
		delete(documented, f.Name)
	}
	for f := range documented {
		t.Errorf("docs/schema.md lists a request field %s that RequestFields does not have", f)
	}
}
