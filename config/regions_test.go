package config

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestRegionTable(t *testing.T) {
	rs := Regions()
	if len(rs) != 50 {
		t.Errorf("%d regions, want the 50 rows of electricity_mixes.csv", len(rs))
	}
	seen := map[string]bool{}
	for _, r := range rs {
		for _, code := range []string{r.Alpha2, r.Alpha3} {
			if code == "" {
				continue
			}
			if seen[code] {
				t.Errorf("code %s appears twice", code)
			}
			seen[code] = true
		}
		if len(r.Alpha3) != 3 || (r.Alpha2 != "" && len(r.Alpha2) != 2) || r.Name == "" {
			t.Errorf("bad codes or name: %+v", r)
		}
		if !(r.CarbonGPerKWh > 10 && r.CarbonGPerKWh < 1000) || !(r.WaterLPerKWh > 0.5 && r.WaterLPerKWh < 25) {
			t.Errorf("implausible figures: %+v", r)
		}
	}
	// The built-in defaults are the world row, rounded.
	w, ok := LookupRegion(WorldRegion)
	d := Default().Facility
	if !ok || math.Round(w.CarbonGPerKWh) != d.CarbonGPerKWh || math.Round(w.WaterLPerKWh*10)/10 != d.WaterOffsiteLPerKWh {
		t.Errorf("world row %+v does not round to the defaults %v, %v", w, d.CarbonGPerKWh, d.WaterOffsiteLPerKWh)
	}
}

func TestLookupRegion(t *testing.T) {
	tests := []struct {
		code          string
		ok            bool
		alpha2        string
		carbon, water float64
	}{
		{"FR", true, "FR", 44.18, 3.6737},
		{"fra", true, "FR", 44.18, 3.6737},
		{" de ", true, "DE", 344.14, 1.947},
		{"US", true, "US", 383.55, 3.1321},
		{"GB", true, "GB", 210.89, 2.329},
		{"KR", true, "KR", 414.27, 1.8877},
		{"TWN", true, "TW", 635.65, 1.4886},
		{"wor", true, "", 473.01, 3.908},
		{"UK", false, "", 0, 0}, // not ISO 3166-1: GB
		{"XX", false, "", 0, 0},
		{"", false, "", 0, 0},
	}
	for _, tc := range tests {
		r, ok := LookupRegion(tc.code)
		if ok != tc.ok || r.Alpha2 != tc.alpha2 || math.Abs(r.CarbonGPerKWh-tc.carbon) > 1e-9 || r.WaterLPerKWh != tc.water {
			t.Errorf("LookupRegion(%q) = %+v, %v; want %s %v g %v L, %v", tc.code, r, ok, tc.alpha2, tc.carbon, tc.water, tc.ok)
		}
	}
}

func TestFactorSources(t *testing.T) {
	dir := t.TempDir()
	carbon := dir + "/grid.csv"
	if err := os.WriteFile(carbon, []byte("time,co2e,market\n2026-01-01T00:00:00Z,100,50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		facility      string
		want          string
		carbon, water float64
		warnings      int
	}{
		{"nothing written", "", "carbon=default:world/ecologits-0adc8ab,water=default:world/ecologits-0adc8ab,price=default", 473, 3.9, 3},
		{"region", "region: FR\nprice_per_kwh: 0.2", "carbon=region:FR/ecologits-0adc8ab,water=region:FR/ecologits-0adc8ab,price=config", 44.18, 3.6737, 0},
		{"alpha-3 lower case", "region: deu", "carbon=region:DE/ecologits-0adc8ab,water=region:DE/ecologits-0adc8ab,price=default", 344.14, 1.947, 1},
		{"world region", "region: WOR", "carbon=region:WOR/ecologits-0adc8ab,water=region:WOR/ecologits-0adc8ab,price=default", 473.01, 3.908, 1},
		{"written wins over region", "region: FR\ncarbon_g_per_kwh: 20\nwater_offsite_l_per_kwh: 1", "carbon=config,water=config,price=default", 20, 1, 1},
		{"null with a region is the region's", "region: FR\ncarbon_g_per_kwh:\nwater_offsite_l_per_kwh: ~", "carbon=region:FR/ecologits-0adc8ab,water=region:FR/ecologits-0adc8ab,price=default", 44.18, 3.6737, 1},
		{"written default value", "carbon_g_per_kwh: 473", "carbon=config,water=default:world/ecologits-0adc8ab,price=default", 473, 3.9, 2},
		{"carbon file wins", "region: FR\ncarbon_g_per_kwh: 20\ncarbon_file: " + carbon + "\ncarbon_market_column: market",
			"carbon=file:grid.csv,carbon_market=file:grid.csv,water=region:FR/ecologits-0adc8ab,price=default", 20, 3.6737, 1},
		{"static market", "region: SE\ncarbon_market_g_per_kwh: 10", "carbon=region:SE/ecologits-0adc8ab,carbon_market=config,water=region:SE/ecologits-0adc8ab,price=default", 35.82, 6.0315, 1},
		{"schedule", "region: US\nprice_schedule:\n  - {from: \"07:00\", to: \"22:00\", price_per_kwh: 0.3}", "carbon=region:US/ecologits-0adc8ab,water=region:US/ecologits-0adc8ab,price=schedule", 383.55, 3.1321, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := "facility:\n  " + strings.ReplaceAll(tc.facility, "\n", "\n  ") + "\n"
			if tc.facility == "" {
				y = ""
			}
			cfg, err := Parse("f.yaml", []byte(y), -1)
			if err != nil {
				t.Fatal(err)
			}
			if got := FactorString(cfg.FactorSources()); got != tc.want {
				t.Errorf("factors = %s\nwant      %s", got, tc.want)
			}
			f := cfg.Facility
			if math.Abs(f.CarbonGPerKWh-tc.carbon) > 1e-9 || f.WaterOffsiteLPerKWh != tc.water {
				t.Errorf("carbon %v water %v, want %v %v", f.CarbonGPerKWh, f.WaterOffsiteLPerKWh, tc.carbon, tc.water)
			}
			if w := cfg.DefaultFactorWarnings(); len(w) != tc.warnings {
				t.Errorf("warnings %q, want %d", w, tc.warnings)
			}
		})
	}
	cfg, _ := Parse("f.yaml", nil, -1)
	w := cfg.DefaultFactorWarnings()
	if len(w) != 3 || !strings.Contains(w[0], "world average 473 gCO2e/kWh (lifecycle, ecologits-0adc8ab)") || !strings.Contains(w[0], "set facility.region") ||
		!strings.Contains(w[1], "3.9 L/kWh") || !strings.Contains(w[2], "0.15 USD/kWh") {
		t.Errorf("warnings %q", w)
	}
}

func TestRegionProblems(t *testing.T) {
	for _, tc := range []struct{ yaml, key, msg string }{
		{"facility:\n  pue: 1.1\n  region: Atlantis\n", "facility.region", `"Atlantis" is not a region of the built-in table`},
		{"facility:\n  region: UK\n", "facility.region", "FR or FRA"},
		// Null without a region is a forgotten value, as before.
		{"facility:\n  carbon_g_per_kwh:\n", "facility.carbon_g_per_kwh", "has no value"},
	} {
		_, err := Parse("r.yaml", []byte(tc.yaml), -1)
		var ce *Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != tc.key || !strings.Contains(ce.Problems[0].Msg, tc.msg) ||
			ce.Problems[0].Line != strings.Count(tc.yaml, "\n") {
			t.Errorf("%q: %v; want one problem on its last line, %s: ...%s...", tc.yaml, err, tc.key, tc.msg)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("the message lists too much: %d bytes", len(err.Error()))
		}
	}
}
