package config

import "testing"

func TestCPUCatalogue(t *testing.T) {
	cat := CPUCatalogue()
	if len(cat) < 5 {
		t.Fatalf("%d CPUs in the catalogue", len(cat))
	}
	for _, c := range cat {
		if c.Match == "" || c.TDPWatts <= 0 || c.IdleWatts <= 0 || c.IdleWatts >= c.TDPWatts {
			t.Errorf("entry %+v", c)
		}
	}
	for model, want := range map[string]float64{
		"Intel(R) Xeon(R) Platinum 8480C":                 350,
		"AMD EPYC 7742 64-Core Processor":                 225,
		"AMD EPYC 9654 96-Core Processor":                 360,
		"Intel(R) Xeon(R) Platinum 8570":                  350,
		"Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz":    270,
		"Intel(R) Xeon(R) Platinum 8468 CPU @ 2.10GHz":    350,
		"AMD EPYC 7763 64-Core Processor":                 280,
		"AMD EPYC 9554 64-Core Processor                ": 360,
	} {
		if c, ok := CPUFor(model); !ok || c.TDPWatts != want {
			t.Errorf("CPUFor(%q) = %+v, %v; want %v W", model, c, ok, want)
		}
	}
	if c, ok := CPUFor("Neoverse-V2"); ok {
		t.Errorf("an unknown CPU matched %+v", c)
	}
}

func TestCPUModel(t *testing.T) {
	for _, tc := range []struct {
		tdp, idle float64 // config
		model     string
		sockets   int
		wantTDP   float64
		wantIdle  float64
		source    string
	}{
		{0, 0, "AMD EPYC 7742 64-Core Processor", 2, 450, 140, "catalogue: 2 x EPYC 7742"},
		{0, 0, "Neoverse-V2", 1, DefaultCPUTDPWatts, DefaultCPUIdleWatts, "default"},
		{500, 0, "AMD EPYC 7742 64-Core Processor", 2, 500, 140, "config"},
		{500, 60, "Neoverse-V2", 1, 500, 60, "config"},
		{80, 0, "Neoverse-V2", 1, 80, 80, "config"},
	} {
		c := Default()
		c.Host.CPUTDPWatts, c.Host.CPUIdleWatts = tc.tdp, tc.idle
		tdp, idle, src := c.CPUModel(tc.model, tc.sockets)
		if tdp != tc.wantTDP || idle != tc.wantIdle || src != tc.source {
			t.Errorf("%+v: got %v, %v, %q", tc, tdp, idle, src)
		}
	}
}
