package estimator

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
}

// ModelParams are one model's training figures per token.
type ModelParams struct {
	TrainingCostPerToken  float64
	TrainingCO2eGPerToken float64
	LivingLabourSPerToken float64
}

// Params are every input of the arithmetic that is not a measurement. They
// are hashed into each record (ParamsHash) so that a record names the rules
// and figures that made it.
type Params struct {
	Node              string
	Weighting         string
	PromptTokenWeight float64
	// SettleDelay: intervals are attributed only once they ended this long
	// before the settle time, so that spans reported a little late still count.
	SettleDelay time.Duration
	// History: how long unsettled intervals are kept for spans still open.
	History time.Duration

	// StaticWatts of the chassis, added to every host interval.
	StaticWatts float64

	PUE                 float64
	CarbonGPerKWh       float64
	WUEOnsiteLPerKWh    float64
	WaterOffsiteLPerKWh float64
	PricePerKWh         float64

	// Devices lists every metered device, the host meter (HostDevice) included
	// when there is one. Intervals of other devices are rejected.
	Devices map[string]DeviceParams
	Models  map[string]ModelParams

	Simulated bool
}

// Hash is a short, stable digest of the parameters.
func (p Params) Hash() string {
	b, _ := json.Marshal(p) // maps marshal with sorted keys: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
