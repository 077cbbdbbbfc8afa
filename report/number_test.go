package report

import (
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/config"
)

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1638: "1,638", 9.9936e-05: "0.0000999", 1234567.8: "1,234,568",
		123.45: "123.5", 0.262: "0.262", -4321.5: "-4,322", 2.5: "2.500", 1e-12: "0.000000000"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
	if got := span(43800 * time.Hour); got != "1825d" {
		t.Errorf("span(43800h) = %q", got)
	}
	if got := span(90 * time.Minute); got != "1h 30m" {
		t.Errorf("span(90m) = %q", got)
	}
}

// The embodied range comes from the catalogue: the H100 NVL has one
// (164–181 kg over 175, plus the server's 712.5 kg), the H100 SXM none.
func TestEmbodiedRatios(t *testing.T) {
	r := embodiedRatios(&config.Config{}, map[string][]GPU{"a": {{Name: "NVIDIA H100 NVL"}}, "b": {{Name: "NVIDIA H100 80GB HBM3"}}, "c": {{Name: "no such GPU"}}})
	if got, want := r["a"], [2]float64{(164 + 712.5) / (175 + 712.5), (181 + 712.5) / (175 + 712.5)}; got != want {
		t.Errorf("H100 NVL ratios %v, want %v", got, want)
	}
	if r["b"] != [2]float64{1, 1} {
		t.Errorf("H100 SXM ratios %v, want 1, 1", r["b"])
	}
	if _, ok := r["c"]; ok {
		t.Error("an unknown GPU has ratios")
	}
	row := Row{Sums: map[string]float64{"embodied_co2e_g": 30}, hostEmbodied: map[string]float64{"a": 10, "c": 20}}
	row.setRange(r)
	if lo, _ := row.embodiedLow(); lo != 10*r["a"][0]+20 {
		t.Errorf("range low %v", lo)
	}
}
