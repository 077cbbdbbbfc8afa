// Package estimator turns meter intervals and request spans into per-request
// cost records. It is pure: no I/O, no goroutines, no clock of its own. The
// collectors produce the input types defined here; the sinks store the output.
package estimator

import "time"

// MethodVersion names the attribution rules that produced a record. Bump it
// whenever the arithmetic changes so that old and new records can be told apart.
// 3: tokens weighting may take its prompt token weight per interval from the
// device's fitted cost model (Params.FitPromptTokenWeight).
const MethodVersion = "3"

// Method says how the joules of an interval were obtained.
type Method string

const (
	// MethodCounter: the delta of a hardware energy counter (NVML total energy, RAPL).
	MethodCounter Method = "counter"
	// MethodPowerIntegral: trapezoid integral of power samples.
	MethodPowerIntegral Method = "power_integral"
	// MethodModelled: a power model (e.g. idle + (TDP-idle) x utilisation).
	MethodModelled Method = "modelled"
	// MethodStatic: a configured constant power.
	MethodStatic Method = "static"
	// MethodMixed: a record whose inputs came from several methods.
	MethodMixed Method = "mixed"
	// MethodNone: no interval contributed (e.g. a request the GPU never served).
	MethodNone Method = "none"
)

// HostDevice is the device id of the node's host meter (CPU package + DRAM).
const HostDevice = "host"

// Interval is one closed meter interval [Start, End) of one device with the
// energy the device used in it. Intervals of a device must be contiguous or
// later than the previous one; a gap is energy nobody measured.
type Interval struct {
	Device string // GPU index as decimal ("0"), MIG instance ("0/1"), or HostDevice
	Start  time.Time
	End    time.Time
	Joules float64
	Method Method
}

// Usage sources, from most to least trustworthy.
const (
	UsageReported        = "reported"         // the server's own usage block
	UsageReportedPartial = "reported_partial" // cumulative usage seen so far (stream cut short)
	UsageEstimated       = "estimated"        // counted from the stream by the proxy
	UsageUnknown         = "unknown"          // nothing to go on
)

// Status values beside the HTTP status code (as decimal text).
const (
	StatusClientClosed = "client_closed"
	// StatusUpstreamError: the upstream answered 2xx and then failed: an
	// error object inside the stream or body, or the body cut short.
	StatusUpstreamError = "upstream_error"
	// StatusAbandoned: begun through the event API and never ended within
	// the history kept, or still open when the ledger was closed (at
	// shutdown); charged until it was given up.
	StatusAbandoned = "abandoned"
)

// Span is what the request side knows about one request. Token counts are -1
// when unknown; they are never written as an exact zero then.
type Span struct {
	ID string
	// Key tells live requests apart inside the process, where ID may not:
	// the proxy keeps a client's X-Request-Id as ID, and two requests may
	// bring the same one. Empty: ID is the key. Never written out.
	Key        string
	Upstream   string
	Model      string
	Tenant     string
	Start      time.Time
	FirstToken time.Time // zero if no token was seen
	End        time.Time
	Status     string // HTTP status code as text, or StatusClientClosed

	PromptTokens     int64
	CompletionTokens int64
	CachedTokens     int64
	ReasoningTokens  int64
	UsageSource      string

	// Devices the request ran on (GPU ids as in Interval.Device). The host
	// meter is implicit: every served request is active on the node.
	Devices []string
	// Served is false for requests the GPU never worked on (upstream refused,
	// unreachable): they get a record but no share of any meter.
	Served bool
	// Namespace and Pod are the Kubernetes pod the request's (first) GPU is
	// allocated to (collector/k8s); empty outside Kubernetes or unknown.
	Namespace, Pod string
}

// Tokens is prompt + completion tokens, counting unknown parts as zero.
func (s Span) Tokens() int64 {
	var n int64
	if s.PromptTokens > 0 {
		n += s.PromptTokens
	}
	if s.CompletionTokens > 0 {
		n += s.CompletionTokens
	}
	return n
}

// Record is the final cost of one request. Energy in joules, money in the
// configured currency, carbon in grams CO2e, water in litres. The plain
// fields are the exact, measured split; the Loaded fields are derived from
// them and the idle ledger (docs/methodology.md).
type Record struct {
	Span
	Node string
	// Time is the record's timestamp: the request's end, bumped by whole
	// nanoseconds where needed so that no two records share one.
	Time time.Time

	GPUEnergyJ      float64
	HostEnergyJ     float64
	StaticEnergyJ   float64
	ITEnergyJ       float64
	FacilityEnergyJ float64

	// CO2eG is operational: facility energy x grid intensity at the time
	// of each interval. CO2eMarketG likewise with the market-based
	// intensity, when one is configured (HasMarketCarbon).
	CO2eG           float64
	CO2eMarketG     float64
	HasMarketCarbon bool
	EmbodiedCO2eG   float64
	// WaterL = WaterOnsiteL (IT energy x WUE) + WaterOffsiteL (facility
	// energy x the grid's water intensity).
	WaterL        float64
	WaterOnsiteL  float64
	WaterOffsiteL float64

	EnergyCost       float64
	DepreciationCost float64
	TrainingCost     float64
	DeadLabourCost   float64

	// Training and living labour of the model, spread over its lifetime
	// tokens; the Has flags say whether the model has the figure at all.
	TrainingCO2eG     float64
	TrainingEnergyJ   float64
	LivingLabourS     float64
	HasTrainingCO2e   bool
	HasTrainingEnergy bool
	HasLivingLabour   bool

	// IdleUplift is the idle/active energy ratio of the trailing window,
	// weighted by the record's energy on each of its GPUs (on the host when
	// it ran on none): LoadedGPUEnergyJ = GPUEnergyJ x (1 + IdleUplift).
	IdleUplift             float64
	LoadedGPUEnergyJ       float64
	LoadedITEnergyJ        float64
	LoadedFacilityEnergyJ  float64
	LoadedCO2eG            float64
	LoadedCO2eMarketG      float64
	LoadedEmbodiedCO2eG    float64
	LoadedWaterL           float64
	LoadedDepreciationCost float64
	LoadedEnergyCost       float64
	LoadedDeadLabourCost   float64

	GPUMeter  Method
	HostMeter Method
	Weighting string

	Simulated     bool
	MethodVersion string
	ParamsHash    string
	// PerDevice is the share of each meter, in the order of Span.Devices
	// with the host last: what the totals above were summed from.
	PerDevice []DeviceShare

	// HistoryTruncated is set when part of the request lay before the oldest
	// interval kept: it was charged only what was kept.
	HistoryTruncated bool
}

// DeviceShare is what one request took from one device's meter.
type DeviceShare struct {
	Device           string
	Joules           float64
	StaticJoules     float64
	DepreciationCost float64
	EmbodiedCO2eG    float64
	// Operational carbon and energy cost of this share's facility energy,
	// each interval at its own intensity and price.
	CO2eG       float64
	CO2eMarketG float64
	EnergyCost  float64
	Method      Method

	// ChargedFrom is set when the intervals of this device before it were
	// settled without the request (it was reported late, or, in tokens and
	// marginal weighting, still running when History ran out).
	ChargedFrom time.Time `json:",omitzero"`
	// ChargedTo is set when the request was charged to another end than
	// its own: past it, because its end was reported after those intervals
	// were settled; or short of it, because the device had not reported
	// past its end for History (the rest is not charged).
	ChargedTo time.Time `json:",omitzero"`

	// Window is the device's trailing idle window that the loaded figures
	// use: EnergyUplift = IdleJ / ActiveJ, WearUplift = IdleWear / ActiveWear.
	Window       UpliftWindow
	EnergyUplift float64
	WearUplift   float64
}

// UpliftWindow sums a device's intervals over [Start, End): the energy no
// request used and the energy requests used, and the seconds with and
// without a request (wear — depreciation, embodied carbon — goes by time).
type UpliftWindow struct {
	Start, End time.Time
	IdleJ      float64
	ActiveJ    float64
	IdleS      float64
	ActiveS    float64
}

// IdleShare is energy and wear of a device that no request used, over [Start, End).
type IdleShare struct {
	Device           string
	Start            time.Time
	End              time.Time
	Joules           float64 // measured energy nobody used
	StaticJoules     float64 // host only: configured chassis power nobody used
	DepreciationCost float64
	EmbodiedCO2eG    float64
	Method           Method
}

// Settlement says how one interval was split: enough, with the parameters
// and a record's span, to recompute that record's share (Explain).
type Settlement struct {
	Interval
	// Covered is the fraction of the interval some request was active in;
	// Covered x Joules was shared, the rest went to idle.
	Covered float64
	// SumWeight is the sum of the weights of the requests charged.
	SumWeight float64
	// ByOverlap: every request's weight was zero (e.g. all in prefill with
	// prompt_token_weight 0), so the interval was shared by overlap.
	ByOverlap bool `json:",omitempty"`
	// Marginal weighting: the coefficients used, where they came from, the
	// fixed part shared by overlap and the sum of the overlaps (seconds).
	PromptJPerToken float64 `json:",omitempty"`
	DecodeJPerToken float64 `json:",omitempty"`
	Coefficients    string  `json:",omitempty"` // configured, fitted, warming (none yet), host (fixed only)
	FixedJ          float64 `json:",omitempty"`
	SumOverlapS     float64 `json:",omitempty"`
	// Tokens weighting: the prompt token weight (α) the interval was split
	// with and where it came from: configured, fitted (from the device's
	// fitted coefficients, above, and the interval) or default (fitting,
	// but no fit to derive it from yet: the configured fallback).
	PromptTokenWeight float64 `json:",omitempty"`
	TokenWeight       string  `json:",omitempty"`
}

// DeviceSample is one telemetry reading of a device, taken at a poll.
type DeviceSample struct {
	Device        string
	Name          string
	Time          time.Time
	PowerW        float64 // NaN when not readable
	UtilGPU       float64 // percent
	UtilMem       float64 // percent
	MemUsedBytes  uint64
	MemTotalBytes uint64
	TempC         float64
	SMClockMHz    float64
	PowerLimitW   float64
	Throttle      uint64 // NVML clocks-event reason bit mask
}
