package config

import (
	_ "embed"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed catalogue.yaml
var catalogueYAML []byte

// HardwareSpec is a resolved hardware entry: the catalogue with the config's
// overrides applied.
type HardwareSpec struct {
	Match                string
	Capex                float64
	ServerShare          float64
	FacilityShare        float64
	Life                 time.Duration
	EmbodiedKgCO2e       float64
	ServerEmbodiedKgCO2e float64
	TDPWatts             float64
	IdleWatts            float64
	// Source says where the entry came from: "catalogue", "config" or
	// "catalogue+config".
	Source string
}

// SlotCapex is everything depreciated per GPU slot.
func (h HardwareSpec) SlotCapex() float64 { return h.Capex + h.ServerShare + h.FacilityShare }

// SlotEmbodiedKg is the manufacturing footprint per GPU slot.
func (h HardwareSpec) SlotEmbodiedKg() float64 { return h.EmbodiedKgCO2e + h.ServerEmbodiedKgCO2e }

// Catalogue returns the embedded hardware catalogue.
func Catalogue() []HardwareSpec {
	var entries []Hardware
	if err := yaml.Unmarshal(catalogueYAML, &entries); err != nil {
		panic(fmt.Sprintf("embedded catalogue.yaml: %v", err)) // a build defect, caught by tests
	}
	out := make([]HardwareSpec, 0, len(entries))
	for _, e := range entries {
		s := HardwareSpec{Match: e.Match, Source: "catalogue"}
		e.applyTo(&s)
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
	set(&s.Capex, h.Capex)
	set(&s.ServerShare, h.ServerShare)
	set(&s.FacilityShare, h.FacilityShare)
	set(&s.EmbodiedKgCO2e, h.EmbodiedKgCO2e)
	set(&s.ServerEmbodiedKgCO2e, h.ServerEmbodiedKgCO2e)
	set(&s.TDPWatts, h.TDPWatts)
	set(&s.IdleWatts, h.IdleWatts)
	if h.Life != nil {
		s.Life = h.Life.D()
	}
}

// HardwareTable is the catalogue with this config's overrides applied.
func (c *Config) HardwareTable() []HardwareSpec {
	table := Catalogue()
	for _, o := range c.Hardware {
		found := false
		for i := range table {
			if strings.EqualFold(table[i].Match, o.Match) {
				o.applyTo(&table[i])
				table[i].Source = "catalogue+config"
				found = true
			}
		}
		if !found {
			s := HardwareSpec{Match: o.Match, Source: "config"}
			o.applyTo(&s)
			table = append(table, s)
		}
	}
	return table
}

// HardwareFor finds the entry for an NVML device name: the longest match that
// is a case-insensitive substring of the name.
func (c *Config) HardwareFor(deviceName string) (HardwareSpec, bool) {
	return lookupHardware(c.HardwareTable(), deviceName)
}

func lookupHardware(table []HardwareSpec, deviceName string) (HardwareSpec, bool) {
	name := strings.ToLower(deviceName)
	best, ok := HardwareSpec{}, false
	for _, h := range table {
		if h.Match != "" && strings.Contains(name, strings.ToLower(h.Match)) && len(h.Match) > len(best.Match) {
			best, ok = h, true
		}
	}
	return best, ok
}
