package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/deadlabour/deadlabour/params"
	"github.com/deadlabour/deadlabour/schema"
)

// The JSON of the admin listener's answers, for the handlers that write
// them and the clients that read them.

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ErrorBody is an answer that says what went wrong.
type ErrorBody struct {
	Error string `json:"error"`
}

// RecordAnswer is one record of GET /v1/requests/{id}: as the InfluxDB
// point has it, and with ?explain=1 how it was made. Fields are in the
// order of their names.
type RecordAnswer struct {
	Explain *Explanation `json:"explain,omitempty"`
	Record  OrderedJSON  `json:"record"`
	// SameIDRecords is 1 in an answer of the only record of its id, absent
	// in SameIDAnswer.Records.
	SameIDRecords int `json:"same_id_records,omitempty"`
}

// SameIDAnswer is GET /v1/requests/{id} when several records share the
// id: those shown, oldest first, never one in their name. Fields are in
// the order of their names.
type SameIDAnswer struct {
	Note          string         `json:"note"`
	Records       []RecordAnswer `json:"records"`
	RecordsShown  int            `json:"records_shown"`
	RequestID     string         `json:"request_id"`
	SameIDRecords int            `json:"same_id_records"`
}

// RequestDoc is GET /v1/requests/{id}'s answer as a client reads it: one
// record (Record, Explain) or several (Records), and how many share the id
// (SameIDRecords).
type RequestDoc struct {
	RecordAnswer
	Records []RecordAnswer `json:"records"`
}

// Explanation is the JSON of ?explain=1.
type Explanation struct {
	MethodVersion string          `json:"method_version"`
	ParamsHash    string          `json:"params_hash"`
	Weighting     string          `json:"weighting"`
	Parameters    []params.Source `json:"parameters"`
	Devices       []DeviceExplain `json:"devices"`
	Recomputed    OrderedJSON     `json:"recomputed"`
	Matches       bool            `json:"matches"`
	MaxRelDiff    float64         `json:"max_rel_diff"`
	Note          string          `json:"note,omitempty"`
}

// DeviceExplain is how one device's share of a record was made.
type DeviceExplain struct {
	Device       string          `json:"device"`
	Joules       float64         `json:"joules"`
	StaticJoules float64         `json:"static_joules,omitempty"`
	Depreciation float64         `json:"depreciation_cost"`
	EmbodiedG    float64         `json:"embodied_co2e_g"`
	Meter        string          `json:"meter"`
	ChargedFrom  string          `json:"charged_from,omitempty"`
	ChargedTo    string          `json:"charged_to,omitempty"`
	KeptFrom     string          `json:"intervals_kept_from,omitempty"`
	Loaded       LoadedExplain   `json:"loaded"`
	WearEnded    bool            `json:"wear_ended,omitempty"`
	Intervals    []ChargeExplain `json:"intervals"`
}

// LoadedExplain is a device's share with the idle of its intervals
// absorbed: each interval's charge divided by the part some request
// covered (the intervals' charged_loaded_j).
type LoadedExplain struct {
	Joules       float64 `json:"joules"`
	StaticJoules float64 `json:"static_joules,omitempty"`
	Depreciation float64 `json:"depreciation_cost"`
	EmbodiedG    float64 `json:"embodied_co2e_g"`
	CO2eG        float64 `json:"co2e_g"`
	EnergyCost   float64 `json:"energy_cost"`
}

// ChargeExplain is one meter interval and the record's share of it.
type ChargeExplain struct {
	Start        string  `json:"start"`
	End          string  `json:"end"`
	Joules       float64 `json:"interval_j"`
	Meter        string  `json:"meter"`
	Covered      float64 `json:"covered"`
	SumWeight    float64 `json:"sum_weight"`
	Coefficients string  `json:"coefficients,omitempty"`
	PromptJ      float64 `json:"prompt_j_per_token,omitempty"`
	DecodeJ      float64 `json:"decode_j_per_token,omitempty"`
	FixedJ       float64 `json:"fixed_j,omitempty"`
	// Tokens weighting: the prompt token weight and where it came from
	// (configured, fitted, default; host: the fallback, never fitted).
	PromptWeight       float64 `json:"prompt_token_weight,omitempty"`
	PromptWeightSource string  `json:"prompt_token_weight_source,omitempty"`
	OverlapS           float64 `json:"overlap_s"`
	PromptTokens       float64 `json:"prompt_tokens,omitempty"`
	DecodeTokens       float64 `json:"completion_tokens,omitempty"`
	Weight             float64 `json:"weight"`
	Share              float64 `json:"share"`
	Charged            float64 `json:"charged_j"`
	ChargedLoaded      float64 `json:"charged_loaded_j"`
	Static             float64 `json:"charged_static_j,omitempty"`
	Carbon             float64 `json:"carbon_g_per_kwh"`
	CarbonMarket       float64 `json:"carbon_market_g_per_kwh,omitempty"`
	Price              float64 `json:"price_per_kwh"`
}

// OrderedJSON is a JSON object whose keys keep their order.
type OrderedJSON []schema.Field

// Get is the value of key.
func (o OrderedJSON) Get(key string) (any, bool) {
	for _, f := range o {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// MarshalJSON writes the object, its keys in order.
func (o OrderedJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Key)
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object, keeping its keys' order; null leaves o
// as it is.
func (o *OrderedJSON) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %.40q", b)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*o = append(*o, schema.Field{Key: fmt.Sprint(k), Value: v})
	}
	return nil
}
