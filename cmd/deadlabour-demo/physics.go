package main

import (
	"math"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

// The demo's physics. Each fake upstream is one model on its GPUs, paced as
// continuous batching paces it (fakeupstream.Batching), and the driver keeps
// a batch of requests in flight on each; the simulated GPUs draw
// idle + (TDP - idle) × load, the load rising with the requests in flight.
// Power and token rate together give the J per output token the demo prints,
// and the figures are held to published ones (docs/methodology.md, "The
// demo"; TestSteadyStateInCitedRanges, TestDriverInCitedRanges).
//
// Step times: one decode step reads every weight once, so its floor is the
// weights' bytes over HBM bandwidth (H100 SXM 3.35 TB/s: 16 GB of bf16
// Llama-3.1-8B weights, 4.8 ms; 141 GB of 70B over four GPUs, 10.5 ms, plus
// the tensor-parallel all-reduce); each request in the batch adds its KV-cache
// reads and compute. The figures are round assumptions of that shape, not
// measurements; what is checked is where they land.

// deployment is one upstream of the demo: a model on some GPUs and the load
// the driver offers it.
type deployment struct {
	name, model string
	gpus        []int
	paramsB     float64 // active parameters, billions (EcoLogits)
	batch       int     // requests the driver keeps in flight on it
	step        fakeupstream.Batching
	cited       citation
}

// citation is the published range a deployment's figures are held to.
type citation struct {
	// J per output token of the deployment's GPUs together, idle excluded.
	lo, hi float64
	// GPU Wh per request, where there is a published anchor (0: none).
	whLo, whHi float64
	source     string
}

// Output tokens per request: uniform in [minOutput, maxOutput], "a few
// hundred" (mean 256).
const minOutput, maxOutput = 64, 448

// Published anchors (docs/methodology.md, "The demo", cites each).
const (
	// Google 2025 (arXiv 2508.15734): the median Gemini Apps text prompt,
	// 0.24 Wh in all, 0.10 Wh under the narrow (accelerator) boundary.
	googleMedianWh            = 0.24
	googleMedianAcceleratorWh = 0.10
)

var small = citation{
	lo: 0.10, hi: 0.40,
	source: "ML.ENERGY leaderboard: Llama-3.1-8B on an H100 with vLLM at batch 64, 0.20 -> 0.12 J per output token across vLLM versions; batch size moves J/token 3-5x",
}

var deployments = []deployment{
	{
		name: "vllm-llama70b", model: "meta-llama/Llama-3.1-70B-Instruct", gpus: []int{0, 1, 2, 3}, paramsB: 70.6, batch: 64,
		step: fakeupstream.Batching{StepBase: 16 * time.Millisecond, StepPerRequest: 300 * time.Microsecond, PrefillPerToken: 50 * time.Microsecond},
		cited: citation{
			lo: 0.8, hi: 4.0,
			// Within 3x of Google's narrow-boundary median.
			whLo: googleMedianAcceleratorWh / 3, whHi: googleMedianAcceleratorWh * 3,
			source: "EcoLogits' per-GPU formula times these 4 GPUs at batch 64; Samsi et al. 2023, \"From Words to Watts\": LLaMA-65B 3-4 J per output token on V100/A100",
		},
	},
	{
		name: "vllm-llama8b", model: "meta-llama/Llama-3.1-8B-Instruct", gpus: []int{4}, paramsB: 8.0, batch: 64,
		step:  fakeupstream.Batching{StepBase: 6 * time.Millisecond, StepPerRequest: 150 * time.Microsecond, PrefillPerToken: 10 * time.Microsecond},
		cited: small,
	},
	{
		name: "vllm-mistral", model: "mistralai/Mistral-7B-Instruct-v0.3", gpus: []int{5}, paramsB: 7.25, batch: 32,
		step:  fakeupstream.Batching{StepBase: 5500 * time.Microsecond, StepPerRequest: 150 * time.Microsecond, PrefillPerToken: 10 * time.Microsecond},
		cited: small,
	},
}

// ecologitsJPerToken is EcoLogits' GPU energy per output token,
// α·exp(β·B)·P + γ Wh per GPU (α = 1.1665e-6, β = -0.011206, γ = 4.053e-5,
// P active parameters in billions, B the batch), for gpus GPUs, in joules: a
// cross-check, not a measurement.
func ecologitsJPerToken(paramsB float64, batch, gpus int) float64 {
	const alpha, beta, gamma = 1.1665e-6, -0.011206, 4.053e-5
	return (alpha*math.Exp(beta*float64(batch))*paramsB + gamma) * 3600 * float64(gpus)
}
