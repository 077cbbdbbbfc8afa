package schema

import (
	"fmt"
	"strings"

	"github.com/deadlabour/deadlabour/estimator"
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
	// known, if set, is asked about a name outside models: true tags the
	// record with it too (WithKnown).
	known func(model string) bool
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

// ModelTag is the model tag of a record naming model: the name made
// writable, or ModelOther when the model is neither configured nor known
// (WithKnown).
func (s RequestSchema) ModelTag(model string) string {
	if s.models != nil && model != "" && !s.models[model] && (s.known == nil || !s.known(model)) {
		return ModelOther
	}
	return TagValue(model)
}

// WithKnown returns s whose model tag also holds every name known reports
// true for: names learnt while running, such as the models an upstream
// lists. known is asked only about names outside the configured ones, from
// every goroutine that makes points (the engine's, the audit's), so it must
// be safe for concurrent use; it may say false and log the name.
func (s RequestSchema) WithKnown(known func(model string) bool) RequestSchema {
	s.known = known
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
// them, and the Kubernetes namespace and pod outside Kubernetes. Other negative token counts are
// an error naming the field.
//
// Tag values come from clients (model, tenant) and are made writable with
// TagValue, so that no client can make its request unrecordable; when the
// model's tag differs from the name the client sent (not configured, or
// made writable), that name is kept in the field model_raw (StringValue,
// at most MaxModelRaw bytes).
func (s RequestSchema) Point(r estimator.Record) (Point, error) {
	model := s.ModelTag(r.Model)
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
		Fields: make([]Field, 0, 59),
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
	)
	p.Fields = appendIf(p.Fields, r.Namespace != "", Field{"namespace", StringValue(r.Namespace, maxStringBytes)})
	p.Fields = appendIf(p.Fields, r.Pod != "", Field{"pod", StringValue(r.Pod, maxStringBytes)})
	p.Fields = append(p.Fields,
		Field{"served", r.Served},
		Field{"simulated", r.Simulated},
		Field{"history_truncated", r.HistoryTruncated},
		Field{"wear_ended", r.WearEnded},
		Field{"method_version", r.MethodVersion},
		Field{"params_hash", r.ParamsHash},
		Field{"factors", StringValue(r.Factors, maxStringBytes)},
	)
	p.Fields = appendIf(p.Fields, r.Recovered, Field{"recovered", true})
	return p, nil
}

// MaxModelRaw bounds the model name kept in model_raw, in bytes.
const MaxModelRaw = 256

// appendIf appends f when the figure it carries is known.
func appendIf(fields []Field, known bool, f Field) []Field {
	if !known {
		return fields
	}
	return append(fields, f)
}
