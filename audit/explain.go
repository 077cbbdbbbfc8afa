package audit

import (
	"fmt"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/estimator"
)

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (s *Store) explain(rec estimator.Record, settled map[string][]estimator.Settlement) admin.Explanation {
	ex := estimator.Explain(s.params, rec, settled)
	out := admin.Explanation{MethodVersion: rec.MethodVersion, ParamsHash: rec.ParamsHash, Weighting: ex.Weighting,
		Parameters: s.sources, Matches: ex.Matches, MaxRelDiff: ex.MaxRelDiff}
	if rec.ParamsHash != s.params.Hash() {
		out.Note = "the record was made under other parameters (params_hash differs): the recomputation uses the current ones"
	} else if !ex.Matches {
		out.Note = fmt.Sprintf("some intervals the record was charged for are no longer kept (attribution.audit_window %s)", s.window)
	}
	out.Recomputed, _ = s.recordJSON(ex.Recomputed)
	for i, trail := range ex.Devices {
		ds := rec.PerDevice[i]
		de := admin.DeviceExplain{Device: ds.Device, Joules: ds.Joules, StaticJoules: ds.StaticJoules, Depreciation: ds.DepreciationCost,
			EmbodiedG: ds.EmbodiedCO2eG, Meter: string(ds.Method), ChargedFrom: stamp(ds.ChargedFrom), ChargedTo: stamp(ds.ChargedTo),
			KeptFrom: stamp(trail.KeptFrom), WearEnded: ds.WearEnded,
			Loaded: admin.LoadedExplain{Joules: ds.Loaded.Joules, StaticJoules: ds.Loaded.StaticJoules, Depreciation: ds.Loaded.DepreciationCost,
				EmbodiedG: ds.Loaded.EmbodiedCO2eG, CO2eG: ds.Loaded.CO2eG, EnergyCost: ds.Loaded.EnergyCost}}
		for _, c := range trail.Intervals {
			de.Intervals = append(de.Intervals, admin.ChargeExplain{Start: stamp(c.Start), End: stamp(c.End), Joules: c.Settlement.Joules,
				Meter: string(c.Method), Covered: c.Covered, SumWeight: c.SumWeight, Coefficients: c.Coefficients,
				PromptJ: c.PromptJPerToken, DecodeJ: c.DecodeJPerToken, FixedJ: c.FixedJ, OverlapS: c.OverlapS,
				PromptWeight: c.PromptTokenWeight, PromptWeightSource: c.TokenWeight,
				PromptTokens: c.PromptTokens, DecodeTokens: c.DecodeTokens, Weight: c.Weight, Share: c.Share,
				Charged: c.Joules, ChargedLoaded: loaded(c.Joules, c.Covered), Static: c.StaticJoules, Carbon: c.CarbonGPerKWh, CarbonMarket: c.CarbonMarketGPerKWh, Price: c.PricePerKWh})
		}
		out.Devices = append(out.Devices, de)
	}
	return out
}

// loaded is an interval's charge with its idle absorbed.
func loaded(charged, covered float64) float64 {
	if covered <= 0 {
		return 0
	}
	return charged / covered
}
