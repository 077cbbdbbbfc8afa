package config

import (
	"bytes"
	_ "embed"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed catalogue.yaml
var catalogueYAML []byte

// HardwareSpec is a resolved hardware entry: the catalogue with the config's
// overrides applied.
type HardwareSpec struct {
	// Match is the entry's label: the catalogue's model name ("H100 SXM"),
	// or a config entry's match.
	Match string
	// Names are the NVML product names the entry covers, matched exactly
	// (case-insensitive, whitespace-normalised, a leading "NVIDIA"
	// optional).
	Names []string
	// MemoryGB tells apart entries that share a name (0: any).
	MemoryGB      float64
	Capex         float64
	ServerShare   float64
	FacilityShare float64
	Life          time.Duration
	// EmbodiedKgCO2e is the point value; EmbodiedKgLow and EmbodiedKgHigh
	// its range where the source gives one (both equal to the point value
	// where it does not, and wherever the config sets embodied_kg_co2e).
	EmbodiedKgCO2e       float64
	EmbodiedKgLow        float64
	EmbodiedKgHigh       float64
	ServerEmbodiedKgCO2e float64
	TDPWatts             float64
	IdleWatts            float64
	// InService is the day the GPUs went into service (config
	// in_service); zero: unknown.
	InService time.Time
	// Source says where the entry came from: "catalogue", "config" or
	// "catalogue+config".
	Source string
}

// SlotCapex is everything depreciated per GPU slot.
func (h HardwareSpec) SlotCapex() float64 { return h.Capex + h.ServerShare + h.FacilityShare }

// SlotEmbodiedKg is the manufacturing footprint per GPU slot.
func (h HardwareSpec) SlotEmbodiedKg() float64 { return h.EmbodiedKgCO2e + h.ServerEmbodiedKgCO2e }

// WearUntil is the day the slot's depreciation and embodied carbon are paid
// off, InService + Life; zero when InService is unknown.
func (h HardwareSpec) WearUntil() time.Time {
	if h.InService.IsZero() {
		return time.Time{}
	}
	return h.InService.Add(h.Life)
}

// HostWearUntil is the day the host's capex and embodied carbon are paid
// off, facility.host_in_service + host_life; zero when the day is unknown.
func (c *Config) HostWearUntil() time.Time {
	if c.Facility.HostInService.IsZero() {
		return time.Time{}
	}
	return c.Facility.HostInService.Add(c.Facility.HostLife.D())
}

// catalogueEntry is one entry of catalogue.yaml: the keys a config entry
// has, the NVML names it covers and the range of its embodied footprint.
type catalogueEntry struct {
	Hardware       `yaml:",inline"`
	Names          []string `yaml:"names"`
	EmbodiedKgLow  *float64 `yaml:"embodied_kg_co2e_low"`
	EmbodiedKgHigh *float64 `yaml:"embodied_kg_co2e_high"`
}

// Catalogue returns the embedded hardware catalogue.
func Catalogue() []HardwareSpec {
	var entries []catalogueEntry
	dec := yaml.NewDecoder(bytes.NewReader(catalogueYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&entries); err != nil {
		panic(fmt.Sprintf("embedded catalogue.yaml: %v", err)) // a build defect, caught by tests
	}
	out := make([]HardwareSpec, 0, len(entries))
	for _, e := range entries {
		s := HardwareSpec{Match: e.Match, Names: e.Names, Source: "catalogue"}
		if len(s.Names) == 0 {
			s.Names = []string{e.Match}
		}
		e.applyTo(&s)
		if e.EmbodiedKgLow != nil {
			s.EmbodiedKgLow = *e.EmbodiedKgLow
		}
		if e.EmbodiedKgHigh != nil {
			s.EmbodiedKgHigh = *e.EmbodiedKgHigh
		}
		out = append(out, s)
	}
	return out
}

func (h Hardware) applyTo(s *HardwareSpec) {
	set := func(dst *float64, v *float64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&s.MemoryGB, h.MemoryGB)
	set(&s.Capex, h.Capex)
	set(&s.ServerShare, h.ServerShare)
	set(&s.FacilityShare, h.FacilityShare)
	if h.EmbodiedKgCO2e != nil {
		// A figure of the operator's own has no range of ours.
		s.EmbodiedKgCO2e, s.EmbodiedKgLow, s.EmbodiedKgHigh = *h.EmbodiedKgCO2e, *h.EmbodiedKgCO2e, *h.EmbodiedKgCO2e
	}
	set(&s.ServerEmbodiedKgCO2e, h.ServerEmbodiedKgCO2e)
	set(&s.TDPWatts, h.TDPWatts)
	set(&s.IdleWatts, h.IdleWatts)
	if h.Life != nil {
		s.Life = h.Life.D()
	}
	if !h.InService.IsZero() {
		s.InService = h.InService.Time
	}
}

// NormalizeGPUName is the form in which GPU names are compared: lower case,
// runs of white space as one space, without a leading "nvidia " (older
// drivers report "A100-SXM4-40GB" where newer ones report "NVIDIA
// A100-SXM4-40GB").
func NormalizeGPUName(name string) string {
	n := strings.Join(strings.Fields(strings.ToLower(name)), " ")
	return strings.TrimPrefix(n, "nvidia ")
}

// nameWords are a name's words, split at spaces and hyphens.
func nameWords(name string) []string {
	return strings.FieldsFunc(NormalizeGPUName(name), func(r rune) bool { return r == ' ' || r == '-' })
}

// hasWords reports whether the words of part appear in name, in order and
// next to each other, as whole words: "H100" is in "NVIDIA H100 PCIe", not
// in "NVIDIA GH100"; "L4" is not in "NVIDIA L40S".
func hasWords(name, part string) bool {
	n, p := nameWords(name), nameWords(part)
	if len(p) == 0 {
		return false
	}
	for i := 0; i+len(p) <= len(n); i++ {
		if slices.Equal(n[i:i+len(p)], p) {
			return true
		}
	}
	return false
}

// names reports whether the entry is called name: its label or one of its
// NVML names.
func (h HardwareSpec) names(name string) bool {
	k := NormalizeGPUName(name)
	if NormalizeGPUName(h.Match) == k {
		return true
	}
	for _, n := range h.Names {
		if NormalizeGPUName(n) == k {
			return true
		}
	}
	return false
}

// sameMemory reports whether memory sizes in GB (or GiB: NVML's totals are
// a little under the nominal size) are the same model's, within 10 %.
func sameMemory(gb, want float64) bool { return math.Abs(gb-want) <= 0.1*want }

// override is what a config hardware entry does to the catalogue.
type override struct {
	// targets are the catalogue entries it overrides; none: it adds a
	// GPU model of its own.
	targets []int
	// partial: it names its target by a part of its names (the rule of
	// old files), not in full.
	partial bool
	// ambiguous are the catalogue entries its part of a name is in, when
	// several are: a problem, and no target.
	ambiguous []int
}

// resolveOverride finds what a config entry overrides. Its match names a
// catalogue entry when it is the entry's label or one of its NVML names,
// compared as NormalizeGPUName does (and, with memory_gb, only the entries
// of that memory size or of none); failing that, when its words appear
// whole and in order in the names of exactly one catalogue entry ("H200",
// "L40S": how files before exact matching named entries). A match in
// several entries' names ("H100": SXM, PCIe and NVL) names none of them:
// Validate reports it. Any other match adds a GPU model, matched exactly.
func resolveOverride(cat []HardwareSpec, o Hardware) override {
	var r override
	named := false
	for i, e := range cat {
		if !e.names(o.Match) {
			continue
		}
		named = true
		if o.MemoryGB == nil || e.MemoryGB == 0 || sameMemory(*o.MemoryGB, e.MemoryGB) {
			r.targets = append(r.targets, i)
		}
	}
	if named {
		return r // an exact name with another memory size is a model of its own
	}
	var in []int
	for i, e := range cat {
		if hasWords(e.Match, o.Match) || slices.ContainsFunc(e.Names, func(n string) bool { return hasWords(n, o.Match) }) {
			in = append(in, i)
		}
	}
	switch len(in) {
	case 0:
	case 1:
		r.targets, r.partial = in, true
	default:
		r.ambiguous = in
	}
	return r
}

// HardwareTable is the catalogue with this config's overrides applied, then
// the GPU models the config adds.
func (c *Config) HardwareTable() []HardwareSpec {
	cat := Catalogue()
	table := slices.Clone(cat)
	for _, o := range c.Hardware {
		r := resolveOverride(cat, o)
		for _, i := range r.targets {
			o.applyTo(&table[i])
			table[i].Source = "catalogue+config"
		}
		if len(r.targets) == 0 && len(r.ambiguous) == 0 {
			s := HardwareSpec{Match: o.Match, Names: []string{o.Match}, Source: "config"}
			o.applyTo(&s)
			table = append(table, s)
		}
	}
	return table
}

// HardwareFor finds the entry of a GPU by the product name NVML reports
// (nvmlDeviceGetName, e.g. "NVIDIA H100 80GB HBM3") and its memory size in
// bytes (nvmlDeviceGetMemoryInfo's total; 0: unknown). The name must be one
// of an entry's names exactly (case-insensitive, whitespace-normalised, a
// leading "NVIDIA" optional); the memory size only tells apart entries that
// share the name (memory_gb, within 10 %). No entry, or several the memory
// size cannot tell apart: not found (UnknownGPUProblem says what to add).
func (c *Config) HardwareFor(deviceName string, memoryBytes uint64) (HardwareSpec, bool) {
	return lookupHardware(c.HardwareTable(), deviceName, memoryBytes)
}

func lookupHardware(table []HardwareSpec, deviceName string, memoryBytes uint64) (HardwareSpec, bool) {
	h, n := lookupCandidates(table, deviceName, memoryBytes)
	return h, n == 1
}

// lookupCandidates is the entry of a GPU and how many entries are left
// once the memory size has told them apart: 1 means found.
func lookupCandidates(table []HardwareSpec, deviceName string, memoryBytes uint64) (HardwareSpec, int) {
	var named []HardwareSpec
	for _, h := range table {
		if slices.ContainsFunc(h.Names, func(n string) bool { return NormalizeGPUName(n) == NormalizeGPUName(deviceName) }) {
			named = append(named, h)
		}
	}
	if len(named) <= 1 {
		if len(named) == 1 {
			return named[0], 1
		}
		return HardwareSpec{}, 0
	}
	var sized, unsized []HardwareSpec
	gib := float64(memoryBytes) / (1 << 30)
	for _, h := range named {
		switch {
		case h.MemoryGB == 0:
			unsized = append(unsized, h)
		case memoryBytes > 0 && sameMemory(gib, h.MemoryGB):
			sized = append(sized, h)
		}
	}
	switch {
	case len(sized) == 1:
		return sized[0], 1
	case len(sized) > 1:
		return HardwareSpec{}, len(sized)
	case len(unsized) == 1:
		return unsized[0], 1
	}
	return HardwareSpec{}, len(named)
}

// UnknownGPUProblem is what to tell the operator of a GPU that HardwareFor
// does not find: its depreciation and embodied carbon are unknown until
// the config adds an entry for it.
func (c *Config) UnknownGPUProblem(deviceName string, memoryBytes uint64) Problem {
	mem := "memory size unknown"
	if memoryBytes > 0 {
		mem = fmt.Sprintf("%.0f GiB", float64(memoryBytes)/(1<<30))
	}
	msg := fmt.Sprintf("no entry for the GPU %q (%s): add one with match: %q and at least capex and life (and embodied_kg_co2e, server_share, server_embodied_kg_co2e where known); config/catalogue.yaml lists the GPUs built in",
		deviceName, mem, deviceName)
	if _, n := lookupCandidates(c.HardwareTable(), deviceName, memoryBytes); n > 1 {
		msg = fmt.Sprintf("%d entries are named %q and its memory size (%s) does not tell them apart: give each a memory_gb", n, deviceName, mem)
	}
	return Problem{Line: c.Line("hardware"), Key: "hardware", Msg: msg}
}
