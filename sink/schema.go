package sink

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/deadlabour/deadlabour/estimator"
)

// Measurement names. They, their tags and their fields are a public
// interface (docs/schema.md): change them only with a migration note.
const (
	MeasurementRequest = "deadlabour_request"
	MeasurementIdle    = "deadlabour_idle"
	MeasurementGPU     = "deadlabour_gpu"
)

// unknownTokens is how estimator.Span marks a token count nobody reported.
const unknownTokens = -1

// ModelOther is the model tag of a record whose model is not configured.
const ModelOther = "other"

// RequestSchema makes the deadlabour_request points of records.
type RequestSchema struct {
	// models are the names the model tag may hold (config models[]); a
	// record naming any other model is tagged ModelOther, so that clients
	// cannot make series at will. nil: every model is tagged as named.
	models map[string]bool
	// currency is the ISO 4217 code of the money fields (config
	// facility.currency), the tag currency; "" leaves the tag out.
	currency string
}

// NewRequestSchema makes the schema of a daemon serving models, whose
// money is in currency: the model tag holds one of models, or ModelOther.
func NewRequestSchema(models []string, currency string) RequestSchema {
	s := RequestSchema{models: make(map[string]bool, len(models)), currency: currency}
	for _, m := range models {
		s.models[m] = true
	}
	return s
}

// Currency is the ISO 4217 code of the money fields, the tag currency.
func (s RequestSchema) Currency() string { return s.currency }

// RequestPoint is the point of r with its model tagged as named, for tools
// and tests that write known models; the daemon uses its RequestSchema.
func RequestPoint(r estimator.Record) (Point, error) {
	return RequestSchema{}.Point(r)
}

// Point is the deadlabour_request point of one record, stamped with
// r.Time. Unknown token counts (-1) are left out rather than written as 0,
// and so are ttft_s when no token was seen and the market-based carbon,
// training carbon and energy and living labour where nobody configured
// them. Other negative token counts are
// an error naming the field.
//
// Tag values come from clients (model, tenant) and are made writable with
// TagValue, so that no client can make its request unrecordable; when the
// model's tag differs from the name the client sent (not configured, or
// made writable), that name is kept in the field model_raw (StringValue,
// at most MaxModelRaw bytes).
func (s RequestSchema) Point(r estimator.Record) (Point, error) {
	model := TagValue(r.Model)
	if s.models != nil && r.Model != "" && !s.models[r.Model] {
		model = ModelOther
	}
	p := Point{
		Measurement: MeasurementRequest,
		Tags: []Tag{
			{"currency", TagValue(s.currency)},
			{"host", TagValue(r.Node)},
			{"model", model},
			{"status", TagValue(r.Status)},
			{"tenant", TagValue(r.Tenant)},
			{"upstream", TagValue(r.Upstream)},
		},
		Fields: make([]Field, 0, 57),
		Time:   r.Time,
	}
	p.Fields = append(p.Fields, Field{"request_id", StringValue(r.ID, maxStringBytes)})
	if model != r.Model {
		p.Fields = append(p.Fields, Field{"model_raw", StringValue(r.Model, MaxModelRaw)})
	}
	for _, tc := range []struct {
		key string
		n   int64
	}{
		{"prompt_tokens", r.PromptTokens},
		{"completion_tokens", r.CompletionTokens},
		{"cached_tokens", r.CachedTokens},
		{"reasoning_tokens", r.ReasoningTokens},
	} {
		switch {
		case tc.n == unknownTokens:
		case tc.n < 0:
			return Point{}, fmt.Errorf("sink: record %q: %s = %d: %w: negative (-1 means unknown)", r.ID, tc.key, tc.n, ErrInvalid)
		default:
			p.Fields = append(p.Fields, Field{tc.key, tc.n})
		}
	}
	p.Fields = append(p.Fields,
		Field{"usage_source", r.UsageSource},
		Field{"duration_s", r.End.Sub(r.Start).Seconds()},
	)
	if !r.FirstToken.IsZero() {
		p.Fields = append(p.Fields, Field{"ttft_s", r.FirstToken.Sub(r.Start).Seconds()})
	}
	p.Fields = append(p.Fields,
		Field{"gpu_energy_j", r.GPUEnergyJ},
		Field{"host_energy_j", r.HostEnergyJ},
		Field{"static_energy_j", r.StaticEnergyJ},
		Field{"it_energy_j", r.ITEnergyJ},
		Field{"facility_energy_j", r.FacilityEnergyJ},
		Field{"co2e_g", r.CO2eG},
	)
	p.Fields = appendIf(p.Fields, r.HasMarketCarbon, Field{"co2e_market_g", r.CO2eMarketG})
	p.Fields = append(p.Fields,
		Field{"embodied_co2e_g", r.EmbodiedCO2eG},
		Field{"water_l", r.WaterL},
		Field{"water_onsite_l", r.WaterOnsiteL},
		Field{"water_offsite_l", r.WaterOffsiteL},
		Field{"energy_cost", r.EnergyCost},
		Field{"depreciation_cost", r.DepreciationCost},
		Field{"training_cost", r.TrainingCost},
		Field{"dead_labour_cost", r.DeadLabourCost},
	)
	p.Fields = appendIf(p.Fields, r.HasTrainingCO2e, Field{"training_co2e_g", r.TrainingCO2eG})
	p.Fields = appendIf(p.Fields, r.HasTrainingEnergy, Field{"training_energy_j", r.TrainingEnergyJ})
	p.Fields = appendIf(p.Fields, r.HasLivingLabour, Field{"living_labour_s", r.LivingLabourS})
	p.Fields = append(p.Fields,
		Field{"idle_uplift", r.IdleUplift},
		Field{"loaded_gpu_energy_j", r.LoadedGPUEnergyJ},
		Field{"loaded_it_energy_j", r.LoadedITEnergyJ},
		Field{"loaded_facility_energy_j", r.LoadedFacilityEnergyJ},
		Field{"loaded_co2e_g", r.LoadedCO2eG},
	)
	p.Fields = appendIf(p.Fields, r.HasMarketCarbon, Field{"loaded_co2e_market_g", r.LoadedCO2eMarketG})
	p.Fields = append(p.Fields,
		Field{"loaded_embodied_co2e_g", r.LoadedEmbodiedCO2eG},
		Field{"loaded_water_l", r.LoadedWaterL},
		Field{"loaded_depreciation_cost", r.LoadedDepreciationCost},
		Field{"loaded_energy_cost", r.LoadedEnergyCost},
		Field{"loaded_dead_labour_cost", r.LoadedDeadLabourCost},
		Field{"gpu_meter", string(r.GPUMeter)},
		Field{"host_meter", string(r.HostMeter)},
		Field{"weighting", r.Weighting},
		Field{"gpus", strings.Join(r.Devices, ",")},
		Field{"served", r.Served},
		Field{"simulated", r.Simulated},
		Field{"history_truncated", r.HistoryTruncated},
		Field{"method_version", r.MethodVersion},
		Field{"params_hash", r.ParamsHash},
	)
	return p, nil
}

// MaxModelRaw bounds the model name kept in model_raw, in bytes.
const MaxModelRaw = 256

// replacement stands in for what a tag or string field cannot carry: it is
// not ASCII, so a value that had one never equals a value a client could
// send through the proxy's tenant header or the event API (visible ASCII).
const replacement = "\uFFFD"

// TagValue makes s writable as a tag value whatever a client put in it:
// U+FFFD replaces invalid UTF-8, control characters, and a backslash at
// the end or before ',', '=', ' ' or '"' (which line protocol would read as
// an escape of the separator). Other values are returned as they are.
func TagValue(s string) string {
	if plainASCII(s) {
		return s
	}
	s = strings.ToValidUTF8(s, replacement)
	var b strings.Builder
	b.Grow(len(s) + 2*len(replacement))
	for i, r := range s {
		switch {
		case isControl(r):
			b.WriteString(replacement)
		case r == '\\' && (i == len(s)-1 || strings.IndexByte(keyNoBackslash, s[i+1]) >= 0):
			b.WriteString(replacement)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// StringValue makes s writable as a string field of at most max bytes:
// U+FFFD replaces invalid UTF-8 and control characters (tab excepted), and
// it is cut at a character boundary.
func StringValue(s string, max int) string {
	if len(s) <= max && plainASCII(s) {
		return s
	}
	s = strings.ToValidUTF8(s, replacement)
	s = strings.Map(func(r rune) rune {
		if r != '\t' && isControl(r) {
			return utf8.RuneError
		}
		return r
	}, s)
	if len(s) > max {
		for max > 0 && !utf8.RuneStart(s[max]) {
			max--
		}
		s = s[:max]
	}
	return s
}

// plainASCII: printable ASCII without a backslash, the values every
// encoder takes as they are.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// appendIf appends f when the figure it carries is known.
func appendIf(fields []Field, known bool, f Field) []Field {
	if !known {
		return fields
	}
	return append(fields, f)
}

// IdlePoint is the deadlabour_idle point of one idle share of a device on
// node, stamped with the share's end. currency is that of its money field
// (depreciation_cost), the tag currency as on deadlabour_request; "" leaves
// the tag out.
func IdlePoint(node, currency string, simulated bool, s estimator.IdleShare) Point {
	return Point{
		Measurement: MeasurementIdle,
		Tags:        []Tag{{"currency", TagValue(currency)}, {"device", s.Device}, {"host", node}},
		Fields: []Field{
			{"energy_j", s.Joules},
			{"static_energy_j", s.StaticJoules},
			{"depreciation_cost", s.DepreciationCost},
			{"embodied_co2e_g", s.EmbodiedCO2eG},
			{"meter", string(s.Method)},
			{"simulated", simulated},
		},
		Time: s.End,
	}
}

// GPUPoint is the deadlabour_gpu telemetry point of one window of one GPU on
// node, stamped with the window's start. Readings the window does not have
// (NaN, or no memory total) are left out.
func GPUPoint(node string, simulated bool, w GPUWindow) Point {
	p := Point{
		Measurement: MeasurementGPU,
		Tags:        []Tag{{"gpu", w.Device}, {"gpu_name", w.Name}, {"host", node}},
		Fields:      make([]Field, 0, 13),
		Time:        w.Start,
	}
	for _, f := range []Field{
		{"power_mean_w", w.PowerMeanW},
		{"power_max_w", w.PowerMaxW},
		{"energy_j", w.EnergyJ},
		{"util_gpu_pct", w.UtilGPUPct},
		{"util_mem_pct", w.UtilMemPct},
	} {
		p.Fields = appendFinite(p.Fields, f)
	}
	if w.MemTotalBytes > 0 {
		p.Fields = append(p.Fields,
			Field{"mem_used_bytes", clampInt64(w.MemUsedBytes)},
			Field{"mem_total_bytes", clampInt64(w.MemTotalBytes)},
		)
	}
	for _, f := range []Field{
		{"temp_c", w.TempC},
		{"sm_clock_mhz", w.SMClockMHz},
		{"power_limit_w", w.PowerLimitW},
	} {
		p.Fields = appendFinite(p.Fields, f)
	}
	p.Fields = append(p.Fields,
		// A bit mask: the bits, not the number, matter.
		Field{"throttle_reasons", int64(w.ThrottleReasons)},
		Field{"samples", int64(w.Samples)},
		Field{"simulated", simulated},
	)
	return p
}

// appendFinite appends f unless its float value is NaN or infinite, which
// in a GPUWindow means "not read".
func appendFinite(fields []Field, f Field) []Field {
	if v := f.Value.(float64); math.IsNaN(v) || math.IsInf(v, 0) {
		return fields
	}
	return append(fields, f)
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
