package estimator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Weighting modes.
const (
	WeightTime     = "time"
	WeightTokens   = "tokens"
	WeightMarginal = "marginal"
)

// DeviceParams are the wear rates of one metered device (a GPU slot, or the host).
type DeviceParams struct {
	// DepreciationPerSecond is capital cost over life, in currency per second.
	DepreciationPerSecond float64
	// EmbodiedGPerSecond is the manufacturing footprint over life, gCO2e per second.
	EmbodiedGPerSecond float64
	// WearUntil is the end of the device's service life: no depreciation
	// or embodied carbon is charged from then on. Zero: no end known.
	WearUntil time.Time `json:",omitzero"`
}

// wear is the depreciation and embodied carbon of the device over
// [t0, t1) (Unix ns), and whether part of it lay past the end of its life.
func (dp DeviceParams) wear(t0, t1 int64) (dep, emb float64, ended bool) {
	if dp.WearUntil.IsZero() || dp.WearUntil.UnixNano() >= t1 {
		dt := float64(t1-t0) / 1e9
		return dp.DepreciationPerSecond * dt, dp.EmbodiedGPerSecond * dt, false
	}
	in := float64(max(dp.WearUntil.UnixNano()-t0, 0)) / 1e9
	return dp.DepreciationPerSecond * in, dp.EmbodiedGPerSecond * in, true
}

// ModelParams are one model's training figures per token. A zero figure is
// one nobody configured: its field is left out of the record.
type ModelParams struct {
	TrainingCostPerToken    float64
	TrainingCO2eGPerToken   float64
	TrainingEnergyJPerToken float64
	LivingLabourSPerToken   float64
}

// MarginalParams are the coefficients of the linear cost model of the
// marginal weighting: an interval's energy is a fixed part plus
// PromptJPerToken per prompt token plus DecodeJPerToken per completion token.
type MarginalParams struct {
	// Fit: fit the coefficients from the node's own history (least squares
	// of interval energy on idle time, busy time and tokens processed,
	// per device) instead of using the configured ones.
	Fit             bool
	PromptJPerToken float64
	DecodeJPerToken float64
	// FitWindow is the time constant of the fit's exponential forgetting.
	FitWindow time.Duration
}

// Params are every input of the arithmetic that is not a measurement. They
// are hashed into each record (ParamsHash) so that a record names the rules
// and figures that made it.
type Params struct {
	Node              string
	Weighting         string
	PromptTokenWeight float64
	// FitPromptTokenWeight: tokens weighting derives each interval's
	// prompt token weight from the device's own cost model, fitted as for
	// marginal weighting (over Marginal.FitWindow); PromptTokenWeight is
	// then the fallback while the fit warms up or has nothing to go on.
	FitPromptTokenWeight bool
	Marginal             MarginalParams
	// SettleDelay: intervals are attributed only once they ended this long
	// before the settle time, so that spans reported a little late still count.
	SettleDelay time.Duration
	// History: how long unsettled intervals are kept for spans still open.
	History time.Duration

	// StaticWatts of the chassis, added to every host interval.
	StaticWatts float64

	PUE float64
	// Carbon is the location-based grid intensity, gCO2e per kWh.
	Carbon Rate
	// CarbonMarket is the market-based intensity; nil when not configured.
	CarbonMarket        *Rate
	WUEOnsiteLPerKWh    float64
	WaterOffsiteLPerKWh float64
	// Price of electricity per kWh of facility energy.
	Price Rate

	// Devices lists every metered device, the host meter (HostDevice) included
	// when there is one. Intervals of other devices are rejected.
	Devices map[string]DeviceParams
	Models  map[string]ModelParams

	Simulated bool
	// Factors names the source of each factor (carbon, water, price, ...)
	// as records carry it, e.g. "carbon=region:FR/2024,price=config".
	Factors string
}

// check returns an error naming the first figure that is not a finite
// number of zero or more (the PUE: of one or more). An infinite figure
// would make every record's figures infinite, and InfluxDB takes none.
func (p *Params) check() error {
	var err error
	need := func(name string, v, least float64) {
		if err == nil && !(v >= least && !math.IsInf(v, 1)) { // NaN fails v >= least
			err = fmt.Errorf("%s %v: want a finite number of %v or more", name, v, least)
		}
	}
	rate := func(name string, r *Rate) {
		need(name, r.Value, 0)
		for _, s := range r.Steps {
			need(fmt.Sprintf("%s from %s", name, s.From.Format(time.RFC3339)), s.Value, 0)
		}
		for _, w := range r.Weekly {
			need(fmt.Sprintf("%s window %v-%v", name, w.From, w.To), w.Value, 0)
		}
	}
	need("PUE", p.PUE, 1)
	need("static watts", p.StaticWatts, 0)
	need("prompt token weight", p.PromptTokenWeight, 0)
	need("marginal prompt J per token", p.Marginal.PromptJPerToken, 0)
	need("marginal decode J per token", p.Marginal.DecodeJPerToken, 0)
	need("on-site water L/kWh", p.WUEOnsiteLPerKWh, 0)
	need("off-site water L/kWh", p.WaterOffsiteLPerKWh, 0)
	rate("carbon intensity", &p.Carbon)
	if p.CarbonMarket != nil {
		rate("market-based carbon intensity", p.CarbonMarket)
	}
	rate("price", &p.Price)
	for _, id := range slices.Sorted(maps.Keys(p.Devices)) {
		d := p.Devices[id]
		need("device "+id+" depreciation per second", d.DepreciationPerSecond, 0)
		need("device "+id+" embodied g per second", d.EmbodiedGPerSecond, 0)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Models)) {
		m := p.Models[name]
		need("model "+name+" training cost per token", m.TrainingCostPerToken, 0)
		need("model "+name+" training CO2e per token", m.TrainingCO2eGPerToken, 0)
		need("model "+name+" training energy per token", m.TrainingEnergyJPerToken, 0)
		need("model "+name+" living labour per token", m.LivingLabourSPerToken, 0)
	}
	return err
}

// Hash is a short, stable digest of the parameters.
func (p Params) Hash() string {
	b, _ := json.Marshal(p) // maps marshal with sorted keys: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
