package estimator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// batchSim is an inference server with continuous batching on one GPU whose
// energy is known exactly: every step of the batch costs a fixed power for
// the step's duration plus a cost per prompt token prefilled and per token
// decoded; an empty batch draws idle power. A request's true energy is its
// own tokens' costs plus an equal share of the fixed part of every step it
// was in (the Shapley value of this cost). The meter sees only the sum,
// in intervals; the spans see only arrival, first token, end and counts —
// and, where a mode scores them with phases known (an inference server's
// trace), the time each request was first scheduled: scheduled.
type batchSim struct {
	IdleW, FixedW      float64 // W
	PrefillJ, DecodeJ  float64 // J per token
	StepS              float64 // s per step, plus:
	StepPerPrefillTokS float64 // s per prompt token in the step
	StepPerSeqS        float64 // s per sequence decoding in the step
	MaxBatch           int
	PrefillChunk       int // prompt tokens per step at most (chunked prefill)
	MeterS             float64
	DurationS          float64
	PromptMed, OutMed  float64 // medians of the log-normal lengths
	BurstS             float64 // arrival rate changes every BurstS
	// NonStreamed: the requests are not streamed, so that a span without
	// phases knows no first token (a trace's does).
	NonStreamed         bool
	Rates               []float64
	truthJ              map[string]float64
	scheduled           map[string]time.Time // the first step each request was in
	intervals           []Interval
	spans               []Span
	stepsRun, meanBatch float64
	idleJ               float64 // drawn with an empty batch
}

func defaultSim() batchSim {
	return batchSim{
		IdleW: 70, FixedW: 300, PrefillJ: 0.02, DecodeJ: 0.15,
		StepS: 0.02, StepPerPrefillTokS: 25e-6, StepPerSeqS: 0.2e-3,
		MaxBatch: 64, PrefillChunk: 2048, MeterS: 0.1, DurationS: 600,
		PromptMed: 500, OutMed: 150, BurstS: 60, Rates: []float64{0, 0.5, 2, 4, 6},
	}
}

type simReq struct {
	span                Span
	prompt, out         int
	prefilled, emitted  int
	stepPrefill, stepDe int
}

func (m *batchSim) run(rng *rand.Rand) {
	m.truthJ = map[string]float64{}
	m.scheduled = map[string]time.Time{}
	// Arrivals: a Poisson process whose rate changes every BurstS.
	var arrivals []*simReq
	for t, i := 0.0, 0; t < m.DurationS; i++ {
		rate := m.Rates[int(t/m.BurstS)*7%len(m.Rates)]
		if rate == 0 {
			t = (math.Floor(t/m.BurstS) + 1) * m.BurstS
			continue
		}
		t += rng.ExpFloat64() / rate
		ln := func(med, lo, hi float64) int {
			return int(math.Round(min(max(med*math.Exp(rng.NormFloat64()*0.9), lo), hi)))
		}
		r := &simReq{prompt: ln(m.PromptMed, 20, 6000), out: ln(m.OutMed, 2, 1500)}
		r.span = Span{ID: fmt.Sprintf("s%05d", i), Model: "m", Start: at(t), Status: "200", Served: true,
			PromptTokens: int64(r.prompt), CompletionTokens: int64(r.out), Devices: []string{"0"}}
		arrivals = append(arrivals, r)
	}
	var meterE float64
	meterStart := 0.0
	// spend adds energy e over [a, b) to the meter, split pro rata at its boundaries.
	spend := func(a, b, e float64) {
		for a < b {
			end := meterStart + m.MeterS
			cut := min(b, end)
			meterE += e * (cut - a) / (b - a)
			e -= e * (cut - a) / (b - a)
			a = cut
			if cut == end {
				m.intervals = append(m.intervals, Interval{Device: "0", Start: at(meterStart), End: at(end), Joules: meterE, Method: MethodCounter})
				meterStart, meterE = end, 0
			}
		}
	}
	var queue, running []*simReq
	t, next := 0.0, 0
	var batchSum float64
	for next < len(arrivals) || len(queue)+len(running) > 0 {
		for next < len(arrivals) && !arrivals[next].span.Start.After(at(t)) {
			queue = append(queue, arrivals[next])
			next++
		}
		for len(running) < m.MaxBatch && len(queue) > 0 {
			running, queue = append(running, queue[0]), queue[1:]
		}
		if len(running) == 0 {
			if next == len(arrivals) {
				break
			}
			gap := arrivals[next].span.Start.Sub(at(0)).Seconds()
			spend(t, gap, m.IdleW*(gap-t))
			m.idleJ += m.IdleW * (gap - t)
			t = gap
			continue
		}
		budget, prefill, decode := m.PrefillChunk, 0, 0
		var batch []*simReq
		for _, r := range running {
			r.stepPrefill, r.stepDe = 0, 0
			if r.prefilled < r.prompt {
				k := min(budget, r.prompt-r.prefilled)
				if k == 0 {
					continue // waits for prefill budget: not in this step
				}
				budget -= k
				r.stepPrefill = k
				prefill += k
				if r.prefilled+k == r.prompt {
					r.stepDe = 1 // the step that ends prefill emits the first token
					decode++
				}
			} else {
				r.stepDe = 1
				decode++
			}
			batch = append(batch, r)
		}
		dur := m.StepS + m.StepPerPrefillTokS*float64(prefill) + m.StepPerSeqS*float64(decode)
		fixed := m.FixedW * dur
		for _, r := range batch {
			if r.prefilled == 0 {
				if _, ok := m.scheduled[r.span.ID]; !ok {
					m.scheduled[r.span.ID] = at(t)
				}
			}
			m.truthJ[r.span.ID] += fixed/float64(len(batch)) + m.PrefillJ*float64(r.stepPrefill) + m.DecodeJ*float64(r.stepDe)
		}
		spend(t, t+dur, fixed+m.PrefillJ*float64(prefill)+m.DecodeJ*float64(decode))
		t += dur
		m.stepsRun++
		batchSum += float64(len(batch))
		keep := running[:0]
		for _, r := range running {
			r.prefilled += r.stepPrefill
			if r.stepDe > 0 && r.emitted == 0 {
				r.span.FirstToken = at(t)
			}
			r.emitted += r.stepDe
			if r.emitted >= r.out {
				r.span.End = at(t)
				m.spans = append(m.spans, r.span)
				continue
			}
			keep = append(keep, r)
		}
		running = keep
	}
	m.idleJ += m.IdleW * (meterStart + m.MeterS - t)
	spend(t, meterStart+m.MeterS, m.IdleW*(meterStart+m.MeterS-t))
	m.meanBatch = batchSum / m.stepsRun
}

// promptWeight is the cost of a prompt token over that of a completion
// token on the simulated hardware at its mean batch, each with the fixed
// power of the time it takes: the prompt_token_weight that suits it.
func (m *batchSim) promptWeight() float64 {
	prompt := m.PrefillJ + m.FixedW*m.StepPerPrefillTokS
	completion := m.DecodeJ + m.FixedW*(m.StepS+m.meanBatch*m.StepPerSeqS)/m.meanBatch
	return prompt / completion
}

type fidelity struct {
	name           string
	median, p90    float64
	mean, absTotal float64
}

// score runs the ledger over the simulation and compares each record's GPU
// energy with the truth: per-request relative errors, and the error of the
// sum over all requests. phases: the spans carry their true scheduled time,
// as an inference server's trace reports it.
func (m *batchSim) score(t *testing.T, name string, p Params, phases bool) fidelity {
	t.Helper()
	spans := slices.Clone(m.spans)
	for i := range spans {
		if phases {
			spans[i].Scheduled = m.scheduled[spans[i].ID]
		} else if m.NonStreamed {
			spans[i].FirstToken = time.Time{}
		}
	}
	w := workload{devices: []string{"0"}, intervals: map[string][]Interval{"0": m.intervals}, spans: spans,
		beginLess: map[string]bool{}, horizon: m.intervals[len(m.intervals)-1].End.Sub(at(0)).Seconds()}
	res := w.run(t, p, feed{ticks: rand.New(rand.NewPCG(1, 2))})
	var errs []float64
	var est, truth float64
	for _, r := range res.records {
		tj := m.truthJ[r.ID]
		errs = append(errs, math.Abs(r.GPUEnergyJ-tj)/tj)
		est += r.GPUEnergyJ
		truth += tj
	}
	slices.Sort(errs)
	f := fidelity{name: name, median: errs[len(errs)/2], p90: errs[len(errs)*9/10], absTotal: math.Abs(est-truth) / truth}
	for _, e := range errs {
		f.mean += e / float64(len(errs))
	}
	return f
}

// fidelityMode is one weighting scored against the truth. An oracle mode
// takes parameters from the simulation itself (its true per-token costs,
// or a prompt token weight computed from them): it shows what the split
// achieves when its parameters are right — the ceiling, a check of the
// arithmetic — not what a node that does not know them gets. The modes
// that know nothing of the simulator are the real check of the method.
type fidelityMode struct {
	name   string
	p      Params
	target bool // held to median <= 5 %
	oracle bool // parameters from the simulation's ground truth
	phases bool // the spans say when each request was scheduled (traces)
}

func fidelityModes(m batchSim) []fidelityMode {
	base := testParams("0")
	base.SettleDelay, base.History = 500*time.Millisecond, 15*time.Minute
	mk := func(mode string, f func(*Params)) Params {
		p := base
		p.Weighting = mode
		if f != nil {
			f(&p)
		}
		return p
	}
	return []fidelityMode{
		{"time", mk(WeightTime, nil), false, false, false},
		{"tokens, prompt_token_weight auto: α fitted (the default)", mk(WeightTokens, func(p *Params) {
			p.PromptTokenWeight, p.FitPromptTokenWeight, p.Marginal.FitWindow = 0.1, true, time.Hour
		}), true, false, false},
		{"tokens, prompt_token_weight 0.1 (fixed)", mk(WeightTokens, func(p *Params) { p.PromptTokenWeight = 0.1 }), false, false, false},
		{fmt.Sprintf("tokens, prompt_token_weight %.3f (oracle: the simulator's true cost ratio)", m.promptWeight()), mk(WeightTokens, func(p *Params) {
			p.PromptTokenWeight = m.promptWeight()
		}), true, true, false},
		{"marginal, configured (oracle: the simulator's true coefficients)", mk(WeightMarginal, func(p *Params) {
			p.Marginal = MarginalParams{PromptJPerToken: m.PrefillJ, DecodeJPerToken: m.DecodeJ}
		}), true, true, false},
		{"marginal, fitted (fit window 1h): the real check", mk(WeightMarginal, func(p *Params) {
			p.Marginal = MarginalParams{Fit: true, FitWindow: time.Hour}
		}), true, false, false},
		{"tokens, prompt_token_weight auto: α fitted, phases known (traces)", mk(WeightTokens, func(p *Params) {
			p.PromptTokenWeight, p.FitPromptTokenWeight, p.Marginal.FitWindow = 0.1, true, time.Hour
		}), true, false, true},
		{"marginal, fitted (fit window 1h), phases known (traces)", mk(WeightMarginal, func(p *Params) {
			p.Marginal = MarginalParams{Fit: true, FitWindow: time.Hour}
		}), true, false, true},
	}
}

// fidelityTable scores every mode on one simulation and returns the
// markdown table, and the modes held to the target that missed it.
func fidelityTable(t *testing.T, name string, m batchSim, seed uint64) (table string, missed []string) {
	m.run(rand.New(rand.NewPCG(seed, 99)))
	var b strings.Builder
	fmt.Fprintf(&b, "%s, seed %d: %d requests, %d meter intervals of %v, mean batch %.1f, prefill %.0f tokens per step, %.0f J measured, %.0f %% idle\n",
		name, seed, len(m.spans), len(m.intervals), time.Duration(m.MeterS*1e9), m.meanBatch, m.StepS/m.StepPerPrefillTokS,
		sumJ(m.intervals), 100*m.idleJ/sumJ(m.intervals))
	fmt.Fprintf(&b, "| weighting | parameters | median error | p90 error | mean error | error of the total |\n|---|---|---|---|---|---|\n")
	for _, mode := range fidelityModes(m) {
		f := m.score(t, mode.name, mode.p, mode.phases)
		from := "none from the simulator"
		if mode.oracle {
			from = "oracle (the simulator's truth)"
		}
		if mode.phases {
			from = "none from the simulator; spans with their scheduled time"
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f %% | %.1f %% | %.1f %% | %.2f %% |\n", f.name, from, 100*f.median, 100*f.p90, 100*f.mean, 100*f.absTotal)
		if mode.target && f.median > 0.05 {
			missed = append(missed, fmt.Sprintf("%s: median error %.1f %%", mode.name, 100*f.median))
		}
	}
	return b.String(), missed
}

// TestFidelity measures each weighting against the simulated ground truth
// and holds four modes to the target, median error <= 5 %. Two of them are
// real checks of the method, knowing nothing of the simulator: tokens
// weighting with the prompt token weight fitted (auto, the default) and
// marginal weighting with fitted coefficients. The other two are oracles —
// tokens with the prompt token weight computed from the simulator's true
// costs (promptWeight), marginal with the simulator's true coefficients —
// and check the arithmetic given perfect parameters, which no node has.
// Tokens weighting with a fixed 0.1 (the default before auto) uses nothing
// of the simulator either; it is reported, not held to the target (about
// 5-6 % here: it misses).
// `go test ./estimator -run TestFidelity -v` prints the tables that
// docs/methodology.md quotes.
func TestFidelity(t *testing.T) {
	busy := defaultSim()
	busy.Rates = []float64{4, 8, 12}
	for _, sc := range []struct {
		name string
		sim  batchSim
		seed uint64
	}{{"bursty", defaultSim(), 1}, {"bursty", defaultSim(), 2}, {"busy", busy, 3}} {
		table, missed := fidelityTable(t, sc.name, sc.sim, sc.seed)
		t.Log("\n" + table)
		for _, m := range missed {
			t.Errorf("%s seed %d: %s, target <= 5 %%", sc.name, sc.seed, m)
		}
	}
}

// TestFidelitySensitivity varies what the phase model assumes, the
// prefill speed (prompt tokens per decode step; the model takes 1,000),
// and reports how each weighting fares. Only marginal weighting with
// configured coefficients is held to the target here, and it is an oracle
// (the simulator's true coefficients): a check of the arithmetic. The real
// checks, the fitted coefficients (marginal, and tokens with the weight
// fitted), and the tokens weighting with any fixed weight depend on where
// the model puts the prompt tokens, and miss the target at slow prefill
// under load (7.7 %, 7.7 %, oracle weight 6.5 %, documented); they are
// reported, not held. The rows with phases known (spans with their true
// scheduling time, as a trace gives) show what the phases change for
// streamed requests: with them the fit places completion tokens by prefill
// step, and the two real checks reach 1.9 % and 0.7 % there (7.6 % and
// 7.4 % before); TestFidelityPhases holds them.
func TestFidelitySensitivity(t *testing.T) {
	for _, perTok := range []float64{10e-6, 60e-6} {
		for _, rates := range [][]float64{{0, 0.5, 2, 4, 6}, {4, 8, 12}} {
			m := defaultSim()
			m.StepPerPrefillTokS, m.Rates = perTok, rates
			table, missed := fidelityTable(t, fmt.Sprintf("rates %v", rates), m, 5)
			t.Log("\n" + table)
			for _, s := range missed {
				if strings.HasPrefix(s, "marginal, configured") {
					t.Errorf("%s", s)
				}
			}
		}
	}
}

// TestFidelityPhases scores the spans with their phases known, as an
// inference server's trace reports them (Span.Scheduled: when the request
// left the queue), against the phases inferred from what a proxy sees, on
// the queueing load ("busy") at both prefill speeds of the sensitivity
// runs, with requests that are not streamed: a proxy then sees no first
// token, and the phase model charges the queue; a trace knows the first
// token and the scheduling time. (With streamed requests the inference is
// already within 0.3 % of a request's duration of the true scheduling
// time in this simulator, whose steps are what the inference assumes, and
// the phases change the fidelity by 0.1-0.3 points: TestFidelitySensitivity.)
// With phases, the two real checks are held to a median <= 2 % at both
// prefill speeds (issue 13's target: <= 2 % at slow prefill under
// queueing, where the inferred phases give 7.7 %). The fit then places
// completion tokens by prefill step (fitter: decode = a + r·b); before it
// spread them evenly and the rows with phases stayed at 7.4-7.6 % here.
func TestFidelityPhases(t *testing.T) {
	for _, sc := range []struct {
		perTok float64
		target float64
	}{{10e-6, 0.02}, {60e-6, 0.02}} {
		m := defaultSim()
		m.StepPerPrefillTokS, m.Rates, m.NonStreamed = sc.perTok, []float64{4, 8, 12}, true
		m.run(rand.New(rand.NewPCG(5, 99)))
		t.Logf("rates %v, prefill %.0f tokens per step, not streamed, seed 5", m.Rates, m.StepS/m.StepPerPrefillTokS)
		for _, mode := range fidelityModes(m) {
			if mode.oracle || !mode.target && mode.p.Weighting != WeightTime {
				continue // the rows docs/methodology.md quotes, no more
			}
			f := m.score(t, mode.name, mode.p, mode.phases)
			t.Logf("| %s | %.1f %% | %.1f %% |", mode.name, 100*f.median, 100*f.p90)
			if mode.phases && f.median > sc.target {
				t.Errorf("%s: median error %.1f %%, target <= %.0f %%", mode.name, 100*f.median, 100*sc.target)
			}
		}
	}
}

func sumJ(ivs []Interval) float64 {
	s := 0.0
	for _, iv := range ivs {
		s += iv.Joules
	}
	return s
}

// The simulation conserves energy: the truth of every request plus idle
// power while the batch was empty is what the meter saw; and its spans
// are in order.
func TestBatchSimConserves(t *testing.T) {
	m := defaultSim()
	m.DurationS = 180
	m.run(rand.New(rand.NewPCG(3, 4)))
	truth := 0.0
	for _, j := range m.truthJ {
		truth += j
	}
	if len(m.spans) < 100 || !near(truth+m.idleJ, sumJ(m.intervals)) {
		t.Fatalf("%d requests, %v J true + %v J idle, %v J metered", len(m.spans), truth, m.idleJ, sumJ(m.intervals))
	}
	for _, s := range m.spans {
		if s.FirstToken.Before(s.Start) || s.FirstToken.After(s.End) || len(m.truthJ) != len(m.spans) {
			t.Fatalf("%s: start %v, first token %v, end %v", s.ID, s.Start, s.FirstToken, s.End)
		}
	}
}
