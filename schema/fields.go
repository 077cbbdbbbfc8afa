package schema

import "slices"

// FieldType is the InfluxDB type of a field. A field's type never changes.
type FieldType uint8

// Field types, as docs/schema.md names them.
const (
	Float   FieldType = iota // float64
	Integer                  // int64, written with the suffix i
	String
	Boolean
)

func (t FieldType) String() string {
	return [...]string{"float", "integer", "string", "boolean"}[t]
}

// RequestField describes one field of deadlabour_request.
type RequestField struct {
	Name string
	Type FieldType
	// Unit is the unit of a number: "J", "s", "gCO2e", "L", "tokens",
	// "currency" (that of the point's tag currency) or "1" (a ratio); ""
	// for strings and booleans.
	Unit string
	// Sums: the figure is the request's share of a quantity, so that its
	// sum over records is that quantity's total (tokens, energy, carbon,
	// water, money, labour). Durations of the request itself, ratios,
	// strings and booleans do not sum.
	Sums bool
	// Optional fields are left out of a record that does not know them
	// (docs/schema.md says when); the others are in every record.
	Optional bool
}

// RequestFields lists the fields of deadlabour_request in the order
// RequestSchema.Point writes them (TestRequestFields holds the two
// together). The caller may modify the slice.
func RequestFields() []RequestField { return slices.Clone(requestFields) }

// What a run of fields is, beside its type and unit.
const (
	plain    = 0         // neither
	sums     = 1 << iota // RequestField.Sums
	optional             // RequestField.Optional
)

var requestFields = slices.Concat(
	fields(String, "", plain, "request_id"),
	fields(String, "", optional, "model_raw"),
	fields(Integer, "tokens", sums|optional, "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"),
	fields(String, "", plain, "usage_source"),
	fields(Float, "s", plain, "duration_s"),
	fields(Float, "s", optional, "ttft_s"),
	fields(Float, "J", sums, "gpu_energy_j", "host_energy_j", "static_energy_j", "it_energy_j", "facility_energy_j"),
	fields(Float, "gCO2e", sums, "co2e_g"),
	fields(Float, "gCO2e", sums|optional, "co2e_market_g"),
	fields(Float, "gCO2e", sums, "embodied_co2e_g"),
	fields(Float, "L", sums, "water_l", "water_onsite_l", "water_offsite_l"),
	fields(Float, "currency", sums, "energy_cost", "depreciation_cost", "training_cost", "dead_labour_cost"),
	fields(Float, "gCO2e", sums|optional, "training_co2e_g"),
	fields(Float, "J", sums|optional, "training_energy_j"),
	fields(Float, "s", sums|optional, "living_labour_s"),
	fields(Float, "1", plain, "idle_uplift"),
	fields(Float, "J", sums, "loaded_gpu_energy_j", "loaded_it_energy_j", "loaded_facility_energy_j"),
	fields(Float, "gCO2e", sums, "loaded_co2e_g"),
	fields(Float, "gCO2e", sums|optional, "loaded_co2e_market_g"),
	fields(Float, "gCO2e", sums, "loaded_embodied_co2e_g"),
	fields(Float, "L", sums, "loaded_water_l"),
	fields(Float, "currency", sums, "loaded_depreciation_cost", "loaded_energy_cost", "loaded_dead_labour_cost"),
	fields(String, "", plain, "gpu_meter", "host_meter", "weighting", "gpus"),
	fields(String, "", optional, "namespace", "pod"),
	fields(Boolean, "", plain, "served", "simulated", "history_truncated", "wear_ended"),
	fields(String, "", plain, "method_version", "params_hash", "factors"),
	fields(Boolean, "", optional, "recovered"),
)

// Scope is the GHG Protocol scope of a carbon field, as an auditor reports
// it; "" for a field that is not carbon.
func Scope(field string) string {
	switch field {
	case "co2e_g", "loaded_co2e_g":
		return "Scope 2, location-based"
	case "co2e_market_g", "loaded_co2e_market_g":
		return "Scope 2, market-based"
	case "embodied_co2e_g", "loaded_embodied_co2e_g":
		return "Scope 3, embodied (capital goods)"
	case "training_co2e_g":
		return "Scope 3, upstream (model training)"
	}
	return ""
}

// fields describes a run of fields alike but for their names.
func fields(t FieldType, unit string, kind int, names ...string) []RequestField {
	out := make([]RequestField, len(names))
	for i, n := range names {
		out[i] = RequestField{Name: n, Type: t, Unit: unit, Sums: kind&sums != 0, Optional: kind&optional != 0}
	}
	return out
}
