package estimator

import "time"

// phases is what the weighting knows of a request's progress, from its
// span alone. A span whose Scheduled time is known (an inference server's
// own trace says when the request left its queue) queued over
// [start, scheduled), was prefilled over [scheduled, first token) and
// decoded over [first token, end): its prompt tokens are spread evenly over
// the prefill, its completion tokens over the decode, nothing over the
// queue. Without it the phases are inferred: a streamed request (its first
// token's time known, two completion tokens or more) is taken to have
// queued from its arrival until its prefill began, then to have been in
// the batch until its end: its prompt tokens processed evenly over
// [in, first token), its completion tokens over [first token, end).
// Continuous batching decodes one token per step for every request in the
// batch, so the request's own time per completion token is the step
// length; its prefill took one step plus one step per prefillTokensPerStep
// prompt tokens. A request whose first token is unknown (not streamed) is
// taken to have been in the batch from its arrival (or from its scheduled
// time, when known), both kinds of tokens spread evenly over [in, end).
type phases struct {
	start, in, ft, end int64   // nanoseconds
	prompt, decode     float64 // tokens per nanosecond, in their phase
	uniform            bool    // both rates hold over [in, end)
	tokens             bool    // some tokens are known
	exact              bool    // the span's Scheduled and first token are known: phases from a trace
}

// prefillTokensPerStep is how many prompt tokens a prefill processes in
// the time of one decode step: about 1,000 for current GPUs and models
// (an 8B model prefills some 20-40 thousand tokens a second on an H100,
// whose decode steps take 20-40 ms; docs/methodology.md shows how the
// fidelity depends on it).
const prefillTokensPerStep = 1000

// phasesOf is the phase model of a finished span; presence: whether to
// model queueing (tokens and marginal weighting; time weighting charges
// the whole span by definition, queue included, even when the span's
// Scheduled time is known). A Scheduled time outside [start, first token)
// (or [start, end) when the first token is unknown) is ignored.
func phasesOf(s *Span, presence bool) phases {
	st, en := s.Start.UnixNano(), s.End.UnixNano()
	ph := phases{start: st, in: st, ft: st, end: en, uniform: true}
	p, d := float64(max(s.PromptTokens, 0)), float64(max(s.CompletionTokens, 0))
	ph.tokens = p+d > 0
	if en <= st {
		return ph
	}
	var f int64
	streamed := false
	if !s.FirstToken.IsZero() {
		f = s.FirstToken.UnixNano()
		streamed = f > st && f < en
	}
	scheduled := false
	if presence && !s.Scheduled.IsZero() {
		x := s.Scheduled.UnixNano()
		if x >= st && (streamed && x < f || !streamed && x < en) {
			ph.in, scheduled = x, true
		}
	}
	if streamed {
		ph.ft, ph.uniform = f, false
		if presence && !scheduled && d >= 2 {
			step := float64(en-f) / (d - 1)
			ph.in = max(st, f-int64(step*(1+p/prefillTokensPerStep)))
		}
		ph.prompt, ph.decode = p/float64(f-ph.in), d/float64(en-f)
		ph.exact = scheduled
		return ph
	}
	ph.prompt, ph.decode = p/float64(en-ph.in), d/float64(en-ph.in)
	return ph
}

// tokensIn is the prompt and completion tokens processed in [a, b), a
// stretch within the request.
func (ph *phases) tokensIn(a, b int64) (prompt, decode float64) {
	if ph.uniform {
		n := float64(b - a)
		return ph.prompt * n, ph.decode * n
	}
	if a < ph.ft {
		prompt = ph.prompt * float64(min(b, ph.ft)-a)
	}
	if b > ph.ft {
		decode = ph.decode * float64(b-max(a, ph.ft))
	}
	return prompt, decode
}

// coefficients of the marginal weighting for one device and settle, and
// the prompt token weight (α) of the tokens weighting for one interval.
type coefficients struct {
	prompt, decode float64 // J per token
	source         string  // configured, fitted, warming, host
	alpha          float64 // tokens weighting: the weight of a prompt token
}

// Sources of the tokens weighting's prompt token weight (Settlement.TokenWeight).
const (
	alphaConfigured = "configured" // attribution.prompt_token_weight, a number
	alphaFitted     = "fitted"     // derived from the device's fitted cost model
	alphaDefault    = "default"    // auto, but no fit to derive it from: the fallback
	alphaHost       = "host"       // auto on the host meter: the fallback, never fitted
)

// fittedAlpha derives the tokens weighting's prompt token weight for one
// interval from the device's fitted cost model (docs/methodology.md, "The
// prompt token weight: fitted"): activeJ is the interval's shared energy,
// prompt and decode the tokens its requests processed in it. The part of
// activeJ the tokens do not explain, F, is the fixed power of the steps;
// every step decodes one token for each request in the batch, so F spread
// over the completion tokens is each one's share of it, and
//
//	α = c_p / (c_d + F / decode)
//
// makes the tokens split charge each request c_p·p + c_d·d + F·d/decode:
// its own tokens' costs and the fixed part by its steps in the batch. ok is
// false when the fit is not ready, there were no completion tokens, or the
// fit found no per-token cost.
func (c *coefficients) fittedAlpha(activeJ, prompt, decode float64) (alpha float64, ok bool) {
	if c.source != "fitted" || decode <= 0 || c.prompt+c.decode <= 0 {
		return 0, false
	}
	fixed := max(activeJ-c.prompt*prompt-c.decode*decode, 0)
	den := c.decode + fixed/decode
	if den <= 0 {
		return 0, false
	}
	return c.prompt / den, true
}

// claim is a request's weight in one interval of one device, and its
// overlap in seconds. The energy weight is in the mode's unit (seconds,
// weighted tokens, joules); wear is shared by energy weight, except in
// marginal weighting where wear, a cost of time alone, is shared by overlap.
// The ledger and Explain both call it, so that a recomputation repeats the
// ledger's arithmetic exactly.
func (p *Params) claim(ph *phases, a, b int64, host bool, c coefficients) (w, overlap, prompt, decode float64) {
	overlap = float64(b-a) / 1e9
	switch p.Weighting {
	case WeightTokens:
		if !ph.tokens {
			// No token rate to go on: time, at one token per second.
			return overlap, overlap, 0, 0
		}
		prompt, decode = ph.tokensIn(a, b)
		return tokenWeight(c.alpha, prompt, decode), overlap, prompt, decode
	case WeightMarginal:
		if host {
			return 0, overlap, 0, 0 // the host is all fixed part
		}
		prompt, decode = ph.tokensIn(a, b)
		return c.prompt*prompt + c.decode*decode, overlap, prompt, decode
	}
	return overlap, overlap, 0, 0
}

// tokenWeight is a request's weight in tokens weighting: α·prompt + decode.
func tokenWeight(alpha, prompt, decode float64) float64 { return alpha*prompt + decode }

// unit is what one unit of weight is charged in one interval.
type unit struct {
	joules, static, co2, co2m, cost float64 // per unit of energy weight
	depreciation, embodied, seconds float64 // per unit of wear weight
	byOverlap                       bool    // wear weight is the overlap
	wearEnded                       bool    // the device's service life ended in the interval
}

// unitOf is the charge per unit of weight of a settled interval of a
// device, given its rates at the interval's midpoint.
func (p *Params) unitOf(st *Settlement, dp DeviceParams, host bool) unit {
	t0, t1 := st.Start.UnixNano(), st.End.UnixNano()
	dt := float64(t1-t0) / 1e9
	static := 0.0
	if host {
		static = p.StaticWatts * dt
	}
	activeJ := st.Joules * st.Covered
	activeS := static * st.Covered
	u := unit{byOverlap: p.Weighting == WeightMarginal}
	if st.SumWeight > 0 {
		u.joules, u.static = activeJ/st.SumWeight, activeS/st.SumWeight
	}
	wear := st.SumWeight
	if u.byOverlap {
		wear = st.SumOverlapS
	}
	dep, emb, ended := dp.wear(t0, t1)
	u.wearEnded = ended
	if wear > 0 {
		u.depreciation = dep * st.Covered / wear
		u.embodied = emb * st.Covered / wear
		u.seconds = dt * st.Covered / wear
	}
	u.co2, u.co2m, u.cost = p.priced(u.joules+u.static, midpoint(t0, t1))
	return u
}

// priced is the carbon (location, market) and energy cost of e joules of
// IT energy at time t, as J × the rate per kWh (the PUE and the kWh come
// in when a share is summed: Params.quantities, idleOf).
func (p *Params) priced(e float64, t time.Time) (co2, co2m, cost float64) {
	co2, cost = e*p.Carbon.At(t), e*p.Price.At(t)
	if p.CarbonMarket != nil {
		co2m = e * p.CarbonMarket.At(t)
	}
	return co2, co2m, cost
}

// add charges w units of energy weight and wearW of wear weight, and the
// same divided by covered, the part of the interval some request was
// active in, to the loaded share: the requests of an interval carry all
// of it between them.
func (a *share) add(u *unit, w, wearW, covered float64) {
	a.amounts.add(u, w, wearW, 1)
	a.wearEnded = a.wearEnded || u.wearEnded
	if covered > 0 {
		a.loaded.add(u, w, wearW, 1/covered)
	}
	a.seconds += wearW * u.seconds
}

func (a *amounts) add(u *unit, w, wearW, f float64) {
	a.joules += f * w * u.joules
	a.static += f * w * u.static
	a.co2 += f * w * u.co2
	a.co2m += f * w * u.co2m
	a.cost += f * w * u.cost
	a.depreciation += f * wearW * u.depreciation
	a.embodied += f * wearW * u.embodied
}

// midpoint is the middle of [t0, t1), at which an interval's rates are taken.
func midpoint(t0, t1 int64) time.Time { return time.Unix(0, t0+(t1-t0)/2) }
