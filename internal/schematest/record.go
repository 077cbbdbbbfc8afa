// Package schematest holds test data for the schema and its users.
package schematest

import (
	"math"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// Record is a fully populated record with values that do not survive
// careless float formatting.
func Record() estimator.Record {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tenth := 0.1 // a variable: constants would add exactly
	return estimator.Record{
		Span: estimator.Span{
			ID:               "req-7f3a",
			Upstream:         "vllm-llama70b",
			Model:            "meta-llama/Llama-3.1-70B-Instruct",
			Tenant:           "t9c1e",
			Start:            start,
			FirstToken:       start.Add(180 * time.Millisecond),
			End:              start.Add(2500 * time.Millisecond),
			Status:           "200",
			PromptTokens:     812,
			CompletionTokens: 345,
			CachedTokens:     512,
			ReasoningTokens:  0,
			UsageSource:      estimator.UsageReported,
			Devices:          []string{"0", "1", "2", "3"},
			Served:           true,
		},
		Node:             "gpu-node-01",
		Time:             start.Add(2500*time.Millisecond + 1),
		GPUEnergyJ:       1234.5678901234567,
		HostEnergyJ:      tenth + 0.2,
		StaticEnergyJ:    1e-9,
		ITEnergyJ:        1234.8678901244566,
		FacilityEnergyJ:  1481.842468149348,
		CO2eG:            194.68,
		EmbodiedCO2eG:    math.SmallestNonzeroFloat64,
		WaterL:           1.7e300,
		EnergyCost:       6.17e-5,
		DepreciationCost: 5.97e-4,
		TrainingCost:     2.314e-3,
		DeadLabourCost:   2.9727e-3,
		GPUMeter:         estimator.MethodCounter,
		HostMeter:        estimator.MethodModelled,
		MethodVersion:    estimator.MethodVersion,
		ParamsHash:       "9f86d081",
		Factors:          "carbon=region:FR/ecologits-0adc8ab,water=region:FR/ecologits-0adc8ab,price=config",

		CO2eMarketG:            20.5,
		HasMarketCarbon:        true,
		WaterOnsiteL:           0.17,
		WaterOffsiteL:          1.6,
		TrainingCO2eG:          2.314,
		HasTrainingCO2e:        true,
		TrainingEnergyJ:        4000,
		HasTrainingEnergy:      true,
		LivingLabourS:          0.2,
		HasLivingLabour:        true,
		IdleUplift:             0.25,
		LoadedGPUEnergyJ:       1543.2,
		LoadedITEnergyJ:        1543.6,
		LoadedFacilityEnergyJ:  1852.3,
		LoadedCO2eG:            243.35,
		LoadedCO2eMarketG:      25.6,
		LoadedEmbodiedCO2eG:    0.5,
		LoadedWaterL:           2.2,
		LoadedDepreciationCost: 7.5e-4,
		LoadedEnergyCost:       7.7e-5,
		LoadedDeadLabourCost:   3.141e-3,
		Weighting:              estimator.WeightTokens,
	}
}
