package schema

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/schematest"
)

func TestRequestPoint(t *testing.T) {
	p, err := RequestPoint(schematest.Record())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Line(p)
	if err != nil {
		t.Fatal(err)
	}
	// The schema is a public interface: this line changes only with a
	// migration note in docs/schema.md.
	want := `deadlabour_request,host=gpu-node-01,model=meta-llama/Llama-3.1-70B-Instruct,status=200,tenant=t9c1e,upstream=vllm-llama70b ` +
		`request_id="req-7f3a",prompt_tokens=812i,completion_tokens=345i,cached_tokens=512i,reasoning_tokens=0i,` +
		`usage_source="reported",duration_s=2.5,ttft_s=0.18,` +
		`gpu_energy_j=1234.5678901234567,host_energy_j=0.30000000000000004,static_energy_j=1e-09,it_energy_j=1234.8678901244566,facility_energy_j=1481.842468149348,` +
		`co2e_g=194.68,co2e_market_g=20.5,embodied_co2e_g=5e-324,water_l=1.7e+300,water_onsite_l=0.17,water_offsite_l=1.6,` +
		`energy_cost=6.17e-05,depreciation_cost=0.000597,training_cost=0.002314,dead_labour_cost=0.0029727,` +
		`training_co2e_g=2.314,training_energy_j=4000,living_labour_s=0.2,` +
		`idle_uplift=0.25,loaded_gpu_energy_j=1543.2,loaded_it_energy_j=1543.6,loaded_facility_energy_j=1852.3,` +
		`loaded_co2e_g=243.35,loaded_co2e_market_g=25.6,loaded_embodied_co2e_g=0.5,loaded_water_l=2.2,` +
		`loaded_depreciation_cost=0.00075,loaded_energy_cost=7.7e-05,loaded_dead_labour_cost=0.003141,` +
		`gpu_meter="counter",host_meter="modelled",weighting="tokens",gpus="0,1,2,3",served=true,simulated=false,history_truncated=false,wear_ended=false,` +
		`method_version="4",params_hash="9f86d081",factors="carbon=region:FR/ecologits-0adc8ab,water=region:FR/ecologits-0adc8ab,price=config" 1772366402500000001`
	if got != want {
		t.Errorf("RequestPoint line =\n%s\nwant\n%s", got, want)
	}
}

func TestRequestPointOmitsUnknown(t *testing.T) {
	r := schematest.Record()
	r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.ReasoningTokens = -1, 7, -1, -1
	r.FirstToken = time.Time{}
	r.Tenant = ""
	r.HasMarketCarbon, r.HasTrainingCO2e, r.HasTrainingEnergy, r.HasLivingLabour = false, false, false, false
	p, err := RequestPoint(r)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, f := range p.Fields {
		keys[f.Key] = true
	}
	for _, k := range []string{"prompt_tokens", "cached_tokens", "reasoning_tokens", "ttft_s",
		"co2e_market_g", "loaded_co2e_market_g", "training_co2e_g", "training_energy_j", "living_labour_s"} {
		if keys[k] {
			t.Errorf("field %s present, want it left out", k)
		}
	}
	if !keys["completion_tokens"] {
		t.Errorf("completion_tokens missing, want 7")
	}
	line, err := Line(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, "tenant=") {
		t.Errorf("line %q has an empty tenant tag", line)
	}
}

func TestRequestPointNegativeTokens(t *testing.T) {
	r := schematest.Record()
	r.CompletionTokens = -2
	_, err := RequestPoint(r)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "completion_tokens = -2") {
		t.Errorf("RequestPoint(completion_tokens -2) error = %v, want ErrInvalid naming the field", err)
	}
}

func TestIdlePoint(t *testing.T) {
	end := time.Unix(1_772_366_410, 0)
	s := estimator.IdleShare{Device: "0/1", Start: end.Add(-10 * time.Second), End: end,
		Joules: 612.25, DepreciationCost: 0.0024, EmbodiedCO2eG: 0.055, Method: estimator.MethodPowerIntegral,
		FacilityEnergyJ: 734.7, CO2eG: 0.08, CO2eMarketG: 0.01, WaterOnsiteL: 0.25, WaterOffsiteL: 0.5, EnergyCost: 0.03}
	tests := []struct {
		name   string
		mod    func(*estimator.IdleShare)
		market bool
		want   string
	}{
		{"absorbed, market carbon", func(*estimator.IdleShare) {}, true,
			`deadlabour_idle,currency=EUR,device=0/1,host=gpu-node-01,share=absorbed energy_j=612.25,static_energy_j=0,it_energy_j=612.25,` +
				`facility_energy_j=734.7,co2e_g=0.08,co2e_market_g=0.01,embodied_co2e_g=0.055,water_l=0.75,water_onsite_l=0.25,water_offsite_l=0.5,` +
				`energy_cost=0.03,depreciation_cost=0.0024,dead_labour_cost=0.0324,duration_s=10,meter="power_integral",wear_ended=false,simulated=true 1772366410000000000`},
		{"unabsorbed, no market carbon", func(s *estimator.IdleShare) { s.Unabsorbed = true }, false,
			`deadlabour_idle,currency=EUR,device=0/1,host=gpu-node-01,share=unabsorbed energy_j=612.25,static_energy_j=0,it_energy_j=612.25,` +
				`facility_energy_j=734.7,co2e_g=0.08,embodied_co2e_g=0.055,water_l=0.75,water_onsite_l=0.25,water_offsite_l=0.5,` +
				`energy_cost=0.03,depreciation_cost=0.0024,dead_labour_cost=0.0324,duration_s=10,meter="power_integral",wear_ended=false,simulated=true 1772366410000000000`},
		{"unmetered downtime", func(s *estimator.IdleShare) {
			*s = estimator.IdleShare{Device: "0/1", Start: s.Start, End: s.End, DepreciationCost: 0.0024, EmbodiedCO2eG: 0.055,
				Method: estimator.MethodUnmetered, Unabsorbed: true, Unmetered: true, WearEnded: true}
		}, false,
			`deadlabour_idle,currency=EUR,device=0/1,host=gpu-node-01,share=unmetered energy_j=0,static_energy_j=0,it_energy_j=0,` +
				`facility_energy_j=0,co2e_g=0,embodied_co2e_g=0.055,water_l=0,water_onsite_l=0,water_offsite_l=0,` +
				`energy_cost=0,depreciation_cost=0.0024,dead_labour_cost=0.0024,duration_s=10,meter="unmetered",wear_ended=true,simulated=true 1772366410000000000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sh := s
			tt.mod(&sh)
			got, err := Line(IdlePoint("gpu-node-01", "EUR", true, tt.market, sh))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("IdlePoint line =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestGPUPoint(t *testing.T) {
	start := time.Unix(1_772_366_400, 0)
	full := GPUWindow{Device: "3", Name: "NVIDIA H100 80GB HBM3", Start: start, End: start.Add(10 * time.Second),
		Samples: 100, PowerMeanW: 402.5, PowerMaxW: 690, EnergyJ: 4025.5, UtilGPUPct: 87.5, UtilMemPct: 41,
		MemUsedBytes: 70 << 30, MemTotalBytes: 80 << 30, TempC: 63, SMClockMHz: 1980, PowerLimitW: 700, ThrottleReasons: 0x4 | 0x1}
	nan := math.NaN()
	unread := GPUWindow{Device: "3", Start: start, End: start.Add(10 * time.Second), Samples: 2,
		PowerMeanW: nan, PowerMaxW: nan, EnergyJ: nan, UtilGPUPct: nan, UtilMemPct: nan, TempC: nan, SMClockMHz: nan, PowerLimitW: math.Inf(1)}
	tests := []struct {
		name string
		w    GPUWindow
		want string
	}{
		{"full", full, `deadlabour_gpu,gpu=3,gpu_name=NVIDIA\ H100\ 80GB\ HBM3,host=n1 ` +
			`power_mean_w=402.5,power_max_w=690,energy_j=4025.5,util_gpu_pct=87.5,util_mem_pct=41,` +
			`mem_used_bytes=75161927680i,mem_total_bytes=85899345920i,temp_c=63,sm_clock_mhz=1980,power_limit_w=700,` +
			`throttle_reasons=5i,samples=100i,simulated=false 1772366400000000000`},
		{"nothing readable", unread, `deadlabour_gpu,gpu=3,host=n1 throttle_reasons=0i,samples=2i,simulated=false 1772366400000000000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Line(GPUPoint("n1", false, tt.w))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("GPUPoint line =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestRequestSchema pins schema version 2: the currency tag, and a model
// not configured tagged other with its name in model_raw.
func TestRequestSchema(t *testing.T) {
	s := NewRequestSchema([]string{"meta-llama/Llama-3.1-70B-Instruct"}, "EUR")
	for _, tc := range []struct{ model, tags, raw string }{
		{"meta-llama/Llama-3.1-70B-Instruct", "currency=EUR,host=gpu-node-01,model=meta-llama/Llama-3.1-70B-Instruct,status=200", ""},
		{"gpt-4o", "currency=EUR,host=gpu-node-01,model=other,status=200", `model_raw="gpt-4o",`},
		{"", "currency=EUR,host=gpu-node-01,status=200", ""},
	} {
		r := schematest.Record()
		r.Model = tc.model
		p, err := s.Point(r)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := Line(p)
		want := "deadlabour_request," + tc.tags + `,tenant=t9c1e,upstream=vllm-llama70b request_id="req-7f3a",` + tc.raw + "prompt_tokens=812i,"
		if !strings.HasPrefix(line, want) {
			t.Errorf("model %q: %s\nwant it to start %s", tc.model, line, want)
		}
	}
}

// WithKnown: a name the function knows is tagged as named, any other
// unconfigured one other; the function is asked only about names outside
// the configured set.
func TestRequestSchemaWithKnown(t *testing.T) {
	var asked []string
	s := NewRequestSchema([]string{"configured"}, "").WithKnown(func(m string) bool {
		asked = append(asked, m)
		return m == "listed"
	})
	for _, tc := range []struct{ model, tag string }{{"configured", "configured"}, {"listed", "listed"}, {"gpt-4o", ModelOther}} {
		r := schematest.Record()
		r.Model = tc.model
		p, err := s.Point(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range p.Tags {
			if tag.Key == "model" && tag.Value != tc.tag {
				t.Errorf("model %q: tag %q, want %q", tc.model, tag.Value, tc.tag)
			}
		}
	}
	if strings.Join(asked, ",") != "listed,gpt-4o" {
		t.Errorf("asked about %v, want listed and gpt-4o only", asked)
	}
}
