// Package estimator turns meter intervals and request spans into per-request
// cost records. It is pure: no I/O, no goroutines, no clock of its own. The
// collectors produce the input types defined here; the sinks store the output.
package estimator

import "time"

// MethodVersion names the attribution rules that produced a record. Bump it
// whenever the arithmetic changes so that old and new records can be told apart.
// 3: tokens weighting may take its prompt token weight per interval from the
// device's fitted cost model (Params.FitPromptTokenWeight).
// 4: loaded figures share each interval's idle among the requests active in
// it (no trailing window); idle carries the whole ledger; wear stops at the
// end of a device's service life; tokens weighting is the default.
const MethodVersion = "4"

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
	// MethodUnmetered: time no meter saw (the daemon was down); only wear
	// is charged for it, to idle (Ledger.Unmetered).
	MethodUnmetered Method = "unmetered"
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
	UsageTrace           = "trace"            // the server's own trace (OTLP): its token counts
	UsageReportedPartial = "reported_partial" // cumulative usage seen so far (stream cut short)
	UsageEstimated       = "estimated"        // counted from the stream by the proxy
	UsageUnknown         = "unknown"          // nothing to go on
	UsageInvalid         = "invalid"          // the server reported a count no request has (over dialect.MaxTokens): counts unknown
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
	Key string
	// TraceID is the request's W3C trace id in hex (its traceparent, or
	// its trace's), where known: a proxy's span and a trace's of the same
	// request are matched by it. Never written out.
	TraceID    string
	Upstream   string
	Model      string
	Tenant     string
	Start      time.Time
	FirstToken time.Time // zero if no token was seen
	// Scheduled is when the request left the server's queue and its
	// prefill began (an inference server's trace says so); zero when
	// unknown, and the phase model infers it (estimator/weight.go).
	Scheduled time.Time
	End       time.Time
	Status    string // HTTP status code as text, or StatusClientClosed

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

	// Loaded figures: the record's share of each interval it ran in,
	// divided by the part of the interval some request covered, so that
	// the requests of an interval carry all of it, its idle included
	// (docs/methodology.md, "Loaded figures"). IdleUplift is
	// LoadedGPUEnergyJ / GPUEnergyJ - 1 (on the host when it ran on no GPU).
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

	// WearEnded: a device the request ran on was past its service life,
	// so no depreciation or embodied carbon was charged for it from then.
	WearEnded bool
	// Factors says where each factor of the record came from, e.g.
	// "carbon=region:FR/2024,water=region:FR/2024,price=config".
	Factors string

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
	// Recovered is set on a record settled at start from the crash journal
	// of a run that did not stop (engine/journal.go), not by the run that
	// metered it.
	Recovered bool
}

// DeviceShare is what one request took from one device's meter.
type DeviceShare struct {
	Device string
	// Quantities is the share: energy, wear, and the operational carbon
	// and energy cost of its facility energy, each interval at its own
	// intensity and price.
	Quantities
	Method Method

	// ChargedFrom is set when the intervals of this device before it were
	// settled without the request (it was reported late, or, in tokens and
	// marginal weighting, still running when History ran out).
	ChargedFrom time.Time `json:",omitzero"`
	// ChargedTo is set when the request was charged to another end than
	// its own: past it, because its end was reported after those intervals
	// were settled; or short of it, because the device had not reported
	// past its end for History (the rest is not charged).
	ChargedTo time.Time `json:",omitzero"`

	// Loaded is this share with each interval's idle that it absorbed:
	// every interval's part divided by the part of the interval some
	// request covered.
	Loaded Quantities
	// WearEnded: the device's service life ended before the request did.
	WearEnded bool `json:",omitempty"`
}

// Quantities are the conserved figures of a share of a meter: energy
// (measured and static), wear, and the carbon and cost of the facility
// energy at each interval's own intensity and price.
type Quantities struct {
	Joules           float64
	StaticJoules     float64
	DepreciationCost float64
	EmbodiedCO2eG    float64
	CO2eG            float64
	CO2eMarketG      float64
	EnergyCost       float64
}

// IdleShare is what a device spent over [Start, End) that no request's
// active figures carry: energy, wear, and everything derived from them
// (facility energy, carbon, water, energy cost), so that Σ records + Σ idle
// equals the meters for every quantity.
//
// Unabsorbed idle is in no record's loaded figures either: it is the idle
// of intervals no request ran in (overcapacity), and what requests the GPU
// never served were charged. The rest (absorbed) is carried by the loaded
// figures of the requests of its interval; an absorbed share can be
// negative, where a refund moved absorbed idle to unabsorbed.
type IdleShare struct {
	Device           string
	Start            time.Time
	End              time.Time
	Joules           float64 // measured energy nobody used
	StaticJoules     float64 // host only: configured chassis power nobody used
	DepreciationCost float64
	EmbodiedCO2eG    float64
	// Facility energy, carbon, water and cost of Joules + StaticJoules,
	// at the intensity and price of the interval's time.
	FacilityEnergyJ float64
	CO2eG           float64
	CO2eMarketG     float64
	WaterOnsiteL    float64
	WaterOffsiteL   float64
	EnergyCost      float64
	Method          Method
	Unabsorbed      bool
	// Unmetered: time the daemon was down, charged wear only (Method
	// MethodUnmetered).
	Unmetered bool
	// WearEnded: the device was past its service life for part of the share.
	WearEnded bool
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
