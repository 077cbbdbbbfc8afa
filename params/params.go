package params

import (
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
)

// Source is one input of the arithmetic, its value and where it came
// from, as the audit shows it.
type Source struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// Build turns the configuration into the estimator's parameters and says
// where each came from. gpus are the GPUs found; simulated marks every
// record made under --simulate.
func Build(cfg *config.Config, gpus []gpu.DeviceInfo, simulated bool, log *slog.Logger) (estimator.Params, []Source, error) {
	f, a := cfg.Facility, cfg.Attribution
	var src []Source
	add := func(name, value, source string) { src = append(src, Source{name, value, source}) }
	key := func(k string, v any) { add(k, fmt.Sprint(v), keySource(cfg, k)) }

	p := estimator.Params{
		Node: cfg.Node, Weighting: a.Weighting, PromptTokenWeight: a.PromptTokenWeight.Value,
		SettleDelay: cfg.SettleDelay(), History: a.History.D(),
		StaticWatts: cfg.Host.StaticWatts, PUE: f.PUE, Carbon: estimator.Const(f.CarbonGPerKWh),
		WUEOnsiteLPerKWh: f.WUEOnsiteLPerKWh, WaterOffsiteLPerKWh: f.WaterOffsiteLPerKWh,
		Price: estimator.Const(f.PricePerKWh), Simulated: simulated,
		Devices: map[string]estimator.DeviceParams{},
		Models:  map[string]estimator.ModelParams{},
	}
	key("attribution.weighting", a.Weighting)
	switch a.Weighting {
	case config.WeightTokens:
		key("attribution.prompt_token_weight", a.PromptTokenWeight)
		if a.PromptTokenWeight.Auto {
			p.FitPromptTokenWeight, p.Marginal.FitWindow = true, a.Marginal.FitWindow.D()
			add("attribution.prompt_token_weight (auto)", "fitted per device and interval",
				fmt.Sprintf("from each device's cost model, least squares over this node's history, forgetting over %s; %v until it is fitted",
					a.Marginal.FitWindow, a.PromptTokenWeight.Value))
		}
	case config.WeightMarginal:
		m := a.Marginal
		p.Marginal = estimator.MarginalParams{PromptJPerToken: m.PromptJPerToken, DecodeJPerToken: m.DecodeJPerToken,
			Fit: m.PromptJPerToken == 0 && m.DecodeJPerToken == 0, FitWindow: m.FitWindow.D()}
		if p.Marginal.Fit {
			add("attribution.marginal", "fitted per device", "both coefficients 0: least squares over this node's history, forgetting over "+m.FitWindow.String())
		} else {
			key("attribution.marginal.prompt_j_per_token", m.PromptJPerToken)
			key("attribution.marginal.decode_j_per_token", m.DecodeJPerToken)
		}
	}
	key("attribution.settle_delay", a.SettleDelay)
	key("attribution.history", a.History)
	key("host.static_watts", cfg.Host.StaticWatts)
	key("facility.pue", f.PUE)
	key("facility.wue_onsite_l_per_kwh", f.WUEOnsiteLPerKWh)
	key("facility.water_offsite_l_per_kwh", f.WaterOffsiteLPerKWh)
	key("facility.currency", f.Currency)

	intensity, err := cfg.Intensity()
	if err != nil {
		return p, nil, fmt.Errorf("facility.carbon_file: %w", err)
	}
	if intensity != nil {
		p.Carbon.Steps = steps(intensity.Location)
		first, last := intensity.Location[0].Time, intensity.Location[len(intensity.Location)-1].Time
		add("facility.carbon_file", f.CarbonFile, fmt.Sprintf("%d rows, %s to %s; column %q", len(p.Carbon.Steps),
			first.Format(time.RFC3339), last.Format(time.RFC3339), columnName(f.CarbonColumn)))
	} else {
		key("facility.carbon_g_per_kwh", f.CarbonGPerKWh)
	}
	switch {
	case intensity != nil && intensity.Market != nil:
		p.CarbonMarket = &estimator.Rate{Steps: steps(intensity.Market)}
		add("facility.carbon_market_column", f.CarbonMarketColumn, keySource(cfg, "facility.carbon_market_column"))
	case f.CarbonMarketGPerKWh != nil:
		p.CarbonMarket = &estimator.Rate{Value: *f.CarbonMarketGPerKWh}
		key("facility.carbon_market_g_per_kwh", *f.CarbonMarketGPerKWh)
	}

	key("facility.price_per_kwh", f.PricePerKWh)
	if len(f.PriceSchedule) > 0 {
		zone, err := cfg.PriceZone()
		if err != nil {
			return p, nil, fmt.Errorf("facility.price_timezone: %w", err)
		}
		p.Price.Zone, p.Price.ZoneName = zone, zone.String()
		for i, w := range f.PriceSchedule {
			tw, problems := w.Parse()
			if len(problems) > 0 {
				return p, nil, fmt.Errorf("facility.price_schedule[%d]: %v", i, problems)
			}
			p.Price.Weekly = append(p.Price.Weekly, estimator.Window{Days: estimator.Weekdays(tw.Days), From: tw.From, To: tw.To, Value: tw.Price})
			add(fmt.Sprintf("facility.price_schedule[%d]", i), fmt.Sprintf("%v %s-%s %v", w.Days, w.From, w.To, w.PricePerKWh),
				keySource(cfg, fmt.Sprintf("facility.price_schedule[%d]", i))+" ("+zone.String()+")")
		}
	}

	life := cfg.Facility.HostLife.D().Seconds()
	p.Devices[estimator.HostDevice] = estimator.DeviceParams{
		DepreciationPerSecond: cfg.Facility.HostCapex / life,
		EmbodiedGPerSecond:    cfg.Facility.HostEmbodiedKgCO2e * 1000 / life,
		WearUntil:             cfg.HostWearUntil(),
	}
	if cfg.Facility.HostCapex > 0 || cfg.Facility.HostEmbodiedKgCO2e > 0 {
		add("host", fmt.Sprintf("capex %v over %s, %v kgCO2e", f.HostCapex, f.HostLife, f.HostEmbodiedKgCO2e), keySource(cfg, "facility.host_capex"))
	}
	maps.Copy(p.Devices, gpuDeviceParams(cfg, gpus, log))
	for _, g := range gpus {
		hw, ok := cfg.HardwareFor(g.Name, g.MemoryBytes)
		if !ok {
			add("gpu "+g.ID, g.Name, "no hardware entry: no depreciation, no embodied carbon")
			continue
		}
		value := fmt.Sprintf("%s: capex %v + server %v + facility %v over %s; %v + %v kgCO2e", g.Name,
			hw.Capex, hw.ServerShare, hw.FacilityShare, config.Duration(hw.Life), hw.EmbodiedKgCO2e, hw.ServerEmbodiedKgCO2e)
		if hw.EmbodiedKgLow > 0 || hw.EmbodiedKgHigh > 0 {
			value += fmt.Sprintf(" (GPU embodied range %v-%v kg)", hw.EmbodiedKgLow, hw.EmbodiedKgHigh)
		}
		if until := hw.WearUntil(); !until.IsZero() {
			value += fmt.Sprintf("; in service from %s, worn until %s", hw.InService.Format(time.DateOnly), until.Format(time.DateOnly))
		}
		if g.MIG {
			value += fmt.Sprintf("; MIG, split by slices among %v", g.Shares())
		}
		add("gpu "+g.ID, value, fmt.Sprintf("hardware %q from the %s (config/catalogue.yaml gives each figure's source)", hw.Match, hw.Source))
	}
	for i, m := range cfg.Models {
		if m.LifetimeTokens > 0 {
			p.Models[m.Name] = estimator.ModelParams{
				TrainingCostPerToken:    m.TrainingCost / m.LifetimeTokens,
				TrainingCO2eGPerToken:   m.TrainingCO2eKg * 1000 / m.LifetimeTokens,
				TrainingEnergyJPerToken: m.TrainingEnergyKWh * 3.6e6 / m.LifetimeTokens,
				LivingLabourSPerToken:   m.HumanLabourHours * 3600 / m.LifetimeTokens,
			}
			add("model "+m.Name, fmt.Sprintf("training %v, %v kgCO2e, %v kWh, %v human hours over %v tokens",
				m.TrainingCost, m.TrainingCO2eKg, m.TrainingEnergyKWh, m.HumanLabourHours, m.LifetimeTokens),
				keySource(cfg, fmt.Sprintf("models[%d]", i)))
		}
	}
	factors := cfg.FactorSources()
	p.Factors = config.FactorString(factors)
	for _, f := range factors {
		add("factor "+f.Name, f.Source, "facility: carbon_file, the key, facility.region, or a built-in default (docs/methodology.md, \"Regional factors\")")
	}
	return p, src, nil
}

func steps(points []config.SeriesPoint) []estimator.Step {
	out := make([]estimator.Step, len(points))
	for i, pt := range points {
		out[i] = estimator.Step{From: pt.Time, Value: pt.Value}
	}
	return out
}

func columnName(c string) string {
	if c == "" {
		return "the second"
	}
	return c
}

// keySource says where a key's value came from: the line of the config
// file that sets it, or the default.
func keySource(cfg *config.Config, key string) string {
	if line := cfg.KeyLine(key); line > 0 {
		return "config line " + strconv.Itoa(line)
	}
	return "default (docs/methodology.md gives its source)"
}

// gpuDeviceParams are the wear rates of every GPU meter device: a GPU's
// slot, or in MIG mode its instances and the board, each with its share of
// the slot (gpu.DeviceInfo.Shares), so that a board is depreciated once.
func gpuDeviceParams(cfg *config.Config, devs []gpu.DeviceInfo, log *slog.Logger) map[string]estimator.DeviceParams {
	out := map[string]estimator.DeviceParams{}
	for _, g := range devs {
		hw, ok := cfg.HardwareFor(g.Name, g.MemoryBytes)
		if !ok {
			log.Warn("no hardware entry matches this GPU: its depreciation and embodied carbon count as 0; add one under hardware:",
				"gpu", g.Index, "name", g.Name, "problem", cfg.UnknownGPUProblem(g.Name, g.MemoryBytes).String())
		}
		for id, share := range g.Shares() {
			if !ok {
				out[id] = estimator.DeviceParams{}
				continue
			}
			s := hw.Life.Seconds()
			out[id] = estimator.DeviceParams{
				DepreciationPerSecond: hw.SlotCapex() / s * share,
				EmbodiedGPerSecond:    hw.SlotEmbodiedKg() * 1000 / s * share,
				WearUntil:             hw.WearUntil(),
			}
		}
	}
	return out
}
