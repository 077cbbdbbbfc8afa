// Package estimator turns meter intervals and request spans into per-request
// cost records. It is pure: no I/O, no goroutines, no clock of its own. The
// collectors produce the input types defined here; the sinks store the output.
package estimator

import "time"

// MethodVersion names the attribution rules that produced a record. Bump it
// whenever the arithmetic changes so that old and new records can be told apart.
const MethodVersion = "1"

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
	// the history kept; charged until it was given up.
	StatusAbandoned = "abandoned"
)

// Span is what the request side knows about one request. Token counts are -1
// when unknown; they are never written as an exact zero then.
type Span struct {
	ID         string
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
// configured currency, carbon in grams CO2e, water in litres.
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

	CO2eG         float64
	EmbodiedCO2eG float64
	WaterL        float64

	EnergyCost       float64
	DepreciationCost float64
	TrainingCost     float64
	DeadLabourCost   float64

	GPUMeter  Method
	HostMeter Method

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
	Method           Method
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
