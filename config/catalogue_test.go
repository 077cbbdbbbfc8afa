package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const gib = 1 << 30

// Real NVML product names (and go-nvml's mock names) find their own entry,
// and only theirs: the old longest-substring match gave GH200 the H200's
// figures, GB200 the B200's, H100 PCIe and NVL the SXM part's.
func TestHardwareForNVMLNames(t *testing.T) {
	cfg := Default()
	tests := []struct {
		name   string
		memory uint64
		want   string // the entry's label; "" not found
		tdp    float64
	}{
		{"NVIDIA H100 80GB HBM3", 81559 << 20, "H100 SXM", 700},
		{"NVIDIA H100 PCIe", 81559 << 20, "H100 PCIe", 350},
		{"NVIDIA H100 NVL", 95830 << 20, "H100 NVL", 400},
		{"NVIDIA H200 141GB HBM3e", 144384 << 20, "H200", 700}, // go-nvml dgxh200
		{"NVIDIA H200", 143771 << 20, "H200", 700},
		{"NVIDIA GH200 480GB", 97871 << 20, "GH200", 1000},
		{"NVIDIA B200 180GB HBM3e", 184320 << 20, "B200", 1000}, // go-nvml dgxb200
		{"NVIDIA B200", 0, "B200", 1000},
		{"NVIDIA GB200", 189471 << 20, "GB200", 1200},
		{"NVIDIA A100-SXM4-80GB", 80 * gib, "A100 SXM4 80GB", 400},
		{"NVIDIA A100-SXM4-40GB", 40 * gib, "A100 SXM4 40GB", 400},
		{"A100-SXM4-40GB", 0, "A100 SXM4 40GB", 400}, // older drivers, no "NVIDIA"
		{"NVIDIA A100-PCIE-40GB", 40 * gib, "A100 PCIe 40GB", 250},
		{"NVIDIA A100-PCIE-80GB", 80 * gib, "A100 PCIe 80GB", 300},
		{"NVIDIA A100 80GB PCIe", 80 * gib, "A100 PCIe 80GB", 300},
		{"NVIDIA L40S", 46068 << 20, "L40S", 350},
		{"  nvidia   l40s ", 0, "L40S", 350},
		// Not in the catalogue: the daemon warns (UnknownGPUProblem).
		{"NVIDIA H200 NVL", 0, "", 0},
		{"NVIDIA H100", 0, "", 0},
		{"NVIDIA L4", 0, "", 0},
		{"NVIDIA L40", 0, "", 0},
		{"Tesla T4", 0, "", 0},
		{"Mock NVIDIA A100-SXM4-40GB", 40 * gib, "", 0}, // go-nvml dgxa100.New's name
		{"H100", 0, "", 0},
		{"", 0, "", 0},
	}
	for _, tc := range tests {
		h, ok := cfg.HardwareFor(tc.name, tc.memory)
		if ok != (tc.want != "") || h.Match != tc.want || h.TDPWatts != tc.tdp {
			t.Errorf("HardwareFor(%q, %d) = %q (%v W), %v; want %q (%v W)", tc.name, tc.memory, h.Match, h.TDPWatts, ok, tc.want, tc.tdp)
		}
	}
	// The figures of the estimated entries: a range around the point.
	for _, tc := range []struct {
		name           string
		low, kg, high  float64
		differsFromSXM bool
	}{
		{"NVIDIA H200", 164, 214, 239, true},
		{"NVIDIA B200", 275, 286, 328, true},
		{"NVIDIA H100 80GB HBM3", 164, 164, 164, false},
	} {
		h, _ := cfg.HardwareFor(tc.name, 0)
		if h.EmbodiedKgLow != tc.low || h.EmbodiedKgCO2e != tc.kg || h.EmbodiedKgHigh != tc.high {
			t.Errorf("%s: embodied %v (%v-%v), want %v (%v-%v)", tc.name, h.EmbodiedKgCO2e, h.EmbodiedKgLow, h.EmbodiedKgHigh, tc.kg, tc.low, tc.high)
		}
	}
}

// memory_gb tells apart entries that share a name, and only them.
func TestHardwareForMemory(t *testing.T) {
	cfg, err := Parse("hw.yaml", []byte("hardware:\n"+
		"  - match: Acme X1\n    memory_gb: 40\n    capex: 1000\n    life: 4y\n"+
		"  - match: Acme X1\n    memory_gb: 80\n    capex: 2000\n    life: 4y\n"+
		// The catalogue's name at another memory size is a model of its own.
		"  - match: NVIDIA L40S\n    memory_gb: 24\n    capex: 3000\n    life: 3y\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		memory uint64
		capex  float64 // 0: not found
	}{
		{"Acme X1", 40 * gib, 1000},
		{"Acme X1", 79 * gib, 2000},
		{"Acme X1", 0, 0},        // unknown size: cannot tell
		{"Acme X1", 60 * gib, 0}, // neither
		{"NVIDIA L40S", 46068 << 20, 8000},
		{"NVIDIA L40S", 24 * gib, 3000},
		{"NVIDIA L40S", 0, 0},
	} {
		h, ok := cfg.HardwareFor(tc.name, tc.memory)
		if ok != (tc.capex != 0) || h.Capex != tc.capex {
			t.Errorf("HardwareFor(%q, %d GiB) = capex %v, %v; want %v", tc.name, tc.memory/gib, h.Capex, ok, tc.capex)
		}
	}
	if p := cfg.UnknownGPUProblem("Acme X1", 0); !strings.Contains(p.Msg, "2 entries are named \"Acme X1\"") || p.Line != 1 || p.Key != "hardware" {
		t.Errorf("ambiguous: %v", p)
	}
	def := Default()
	if p := def.UnknownGPUProblem("NVIDIA L4", 24*gib); !strings.Contains(p.Msg, `no entry for the GPU "NVIDIA L4" (24 GiB): add one with match: "NVIDIA L4" and at least capex and life`) {
		t.Errorf("unknown: %v", p)
	}
}

// What a config entry's match overrides: a catalogue entry's label or NVML
// name; a part of one entry's names (old files); never a part of several.
func TestHardwareOverrideRules(t *testing.T) {
	tests := []struct {
		match   string
		problem string   // "" none
		hit     []string // NVML names that get capex 1
		miss    []string // NVML names that keep the catalogue's capex
	}{
		{"NVIDIA H100 PCIe", "", []string{"NVIDIA H100 PCIe"}, []string{"NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL"}},
		{"h100 pcie", "", []string{"NVIDIA H100 PCIe"}, []string{"NVIDIA H100 80GB HBM3"}},
		{"H100 SXM", "", []string{"NVIDIA H100 80GB HBM3"}, []string{"NVIDIA H100 PCIe"}},
		{"H200", "", []string{"NVIDIA H200", "NVIDIA H200 141GB HBM3e"}, []string{"NVIDIA GH200 480GB"}},
		{"B200", "", []string{"NVIDIA B200"}, []string{"NVIDIA GB200"}},
		{"GB200", "", []string{"NVIDIA GB200"}, []string{"NVIDIA B200"}},
		{"L40S", "", []string{"NVIDIA L40S"}, nil},
		{"A100-SXM4-40GB", "", []string{"NVIDIA A100-SXM4-40GB"}, []string{"NVIDIA A100-SXM4-80GB"}},
		{"NVIDIA L4", "", nil, []string{"NVIDIA L40S"}}, // a new model: "L4" is no word of "L40S"
		{"A100 PCIe", "several catalogue entries (\"NVIDIA A100-PCIE-80GB\", \"NVIDIA A100-PCIE-40GB\")", nil, nil},
		{"H100", `"H100" is part of the names of several catalogue entries ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL")`, nil, nil},
		{"A100", "is part of the names of several catalogue entries", nil, nil},
		{"80GB", "is part of the names of several catalogue entries", nil, nil},
	}
	for _, tc := range tests {
		cfg, err := Parse("hw.yaml", []byte("hardware:\n  - match: "+tc.match+"\n    capex: 1\n    life: 5y\n"), -1)
		if tc.problem != "" {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != "hardware[0].match" || ce.Problems[0].Line != 2 || !strings.Contains(ce.Problems[0].Msg, tc.problem) {
				t.Errorf("match %q: %v; want %s", tc.match, err, tc.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("match %q: %v", tc.match, err)
			continue
		}
		for _, n := range tc.hit {
			if h, ok := cfg.HardwareFor(n, 0); !ok || h.Capex != 1 || h.Source != "catalogue+config" {
				t.Errorf("match %q: %s = %+v, want overridden", tc.match, n, h)
			}
		}
		for _, n := range tc.miss {
			if h, ok := cfg.HardwareFor(n, 0); !ok || h.Capex == 1 {
				t.Errorf("match %q: %s = %+v, want the catalogue's", tc.match, n, h)
			}
		}
	}
}

func TestInService(t *testing.T) {
	cfg, err := Parse("d.yaml", []byte("facility:\n  host_in_service: \"2023-01-15\"\n  host_life: 4y\nhardware:\n  - match: NVIDIA H100 80GB HBM3\n    in_service: 2024-03-01\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := cfg.HardwareFor("NVIDIA H100 80GB HBM3", 0)
	day := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	if !h.InService.Equal(day) || !h.WearUntil().Equal(day.Add(5*Year)) {
		t.Errorf("in service %v, wear until %v", h.InService, h.WearUntil())
	}
	if want := time.Date(2023, 1, 15, 0, 0, 0, 0, time.UTC).Add(4 * Year); !cfg.HostWearUntil().Equal(want) {
		t.Errorf("host wear until %v, want %v", cfg.HostWearUntil(), want)
	}
	if p, _ := cfg.HardwareFor("NVIDIA H100 PCIe", 0); !p.InService.IsZero() || !p.WearUntil().IsZero() || !(&Config{}).HostWearUntil().IsZero() {
		t.Errorf("unknown days are not zero: %v %v", p.InService, p.WearUntil())
	}

	for _, tc := range []struct{ yaml, key, msg string }{
		{"hardware:\n  - match: NVIDIA B200\n    in_service: 2024-13-01\n", "hardware[0].in_service", `invalid date "2024-13-01": want YYYY-MM-DD`},
		{"hardware:\n  - match: NVIDIA B200\n    in_service: march\n", "hardware[0].in_service", `invalid date "march"`},
		{"hardware:\n  - match: NVIDIA B200\n    in_service: [2024]\n", "hardware[0].in_service", "want a date such as 2024-03-01, got a list"},
		{"facility:\n  host_in_service: 01/03/2024\n", "facility.host_in_service", `invalid date "01/03/2024"`},
	} {
		_, err := Parse("d.yaml", []byte(tc.yaml), -1)
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != tc.key || ce.Problems[0].Line != strings.Count(tc.yaml, "\n") || !strings.Contains(ce.Problems[0].Msg, tc.msg) {
			t.Errorf("%q: %v; want %s: %s on the last line", tc.yaml, err, tc.key, tc.msg)
		}
	}
}

// attribution.idle_window still loads (old files), is not judged, and is
// named as ignored.
func TestIdleWindowDeprecated(t *testing.T) {
	cfg, err := Parse("old.yaml", []byte("attribution:\n  weighting: time\n  idle_window: 0s\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.DeprecationWarnings("old.yaml")
	if len(w) != 1 || !strings.HasPrefix(w[0], "old.yaml:3: attribution.idle_window is ignored since method version 4") {
		t.Errorf("warnings %q", w)
	}
	if cfg, _ := Parse("new.yaml", nil, -1); len(cfg.DeprecationWarnings("new.yaml")) != 0 || cfg.Attribution.Weighting != WeightTokens {
		t.Errorf("defaults: %q, weighting %s", cfg.DeprecationWarnings("new.yaml"), cfg.Attribution.Weighting)
	}
}
