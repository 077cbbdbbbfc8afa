package config

import (
	_ "embed"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed cpus.yaml
var cpusYAML []byte

// CPUSpec is one CPU model's power, per socket, for the host power model.
type CPUSpec struct {
	Match     string  `yaml:"match"`
	TDPWatts  float64 `yaml:"tdp_watts"`
	IdleWatts float64 `yaml:"idle_watts"`
}

// Defaults of the host power model when neither the config nor the CPU
// catalogue gives a figure: all sockets together.
const (
	DefaultCPUTDPWatts  = 350
	DefaultCPUIdleWatts = 100
)

// CPUCatalogue returns the embedded CPU catalogue (config/cpus.yaml).
func CPUCatalogue() []CPUSpec {
	var out []CPUSpec
	if err := yaml.Unmarshal(cpusYAML, &out); err != nil {
		panic(fmt.Sprintf("embedded cpus.yaml: %v", err)) // a build defect, caught by tests
	}
	return out
}

// CPUFor finds the catalogue entry of a CPU model name: the longest match
// that is a case-insensitive substring of it.
func CPUFor(model string) (CPUSpec, bool) {
	name := strings.ToLower(model)
	best, ok := CPUSpec{}, false
	for _, c := range CPUCatalogue() {
		if c.Match != "" && strings.Contains(name, strings.ToLower(c.Match)) && len(c.Match) > len(best.Match) {
			best, ok = c, true
		}
	}
	return best, ok
}

// CPUModel resolves the host power model: the config's figures where set
// (non-zero), else the catalogue's for this CPU model times its sockets,
// else the defaults. source says which, for the log.
func (c *Config) CPUModel(model string, sockets int) (tdp, idle float64, source string) {
	tdp, idle, source = DefaultCPUTDPWatts, DefaultCPUIdleWatts, "default"
	if spec, ok := CPUFor(model); ok && sockets > 0 {
		tdp, idle = spec.TDPWatts*float64(sockets), spec.IdleWatts*float64(sockets)
		source = fmt.Sprintf("catalogue: %d x %s", sockets, spec.Match)
	}
	if c.Host.CPUTDPWatts > 0 {
		tdp, source = c.Host.CPUTDPWatts, "config"
	}
	if c.Host.CPUIdleWatts > 0 {
		idle, source = c.Host.CPUIdleWatts, "config"
	}
	idle = min(idle, tdp)
	return tdp, idle, source
}
