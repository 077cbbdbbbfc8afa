package estimator

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// Settling: how each interval is split among the requests active in it.

// Output is what one Settle call produced.
type Output struct {
	Records []Record
	Idle    []IdleShare
	// Settled says how each interval that some request was charged for
	// was split, for the audit trail.
	Settled []Settlement
}

// Settle attributes every interval that can be attributed at time now and
// returns the records that became final and the idle shares found.
func (l *Ledger) Settle(now time.Time) Output {
	l.refund()
	for _, id := range l.order {
		l.settleDevice(l.devs[id], now, false)
	}
	return l.collect(now, false)
}

// Close settles everything that is left, as at shutdown: every pending
// interval is attributed, and every span becomes a record. Spans still
// open are recorded with what they were charged, status abandoned, flagged
// truncated, ending where their devices' intervals end.
func (l *Ledger) Close() Output {
	l.refund()
	// Requests still open are abandoned first, where their devices'
	// intervals end, so that the last intervals charge them in every
	// weighting (tokens and marginal charge a request only once it ended).
	for _, k := range slices.Sorted(maps.Keys(l.spans)) {
		if sp := l.spans[k]; !sp.ended {
			l.abandon(sp)
			l.waiting = append(l.waiting, sp)
		}
	}
	for _, id := range l.order {
		l.settleDevice(l.devs[id], time.Time{}, true)
	}
	return l.collect(time.Time{}, true)
}

func (l *Ledger) settleDevice(d *device, now time.Time, all bool) {
	if len(d.pending) == 0 {
		return
	}
	horizon := now.Add(-l.p.SettleDelay).UnixNano()
	forced := now.Add(-l.p.History).UnixNano()
	if l.p.Weighting != WeightTime {
		// Token weights need the span's final counts: wait for open spans,
		// but no longer than the history kept.
		for _, r := range d.spans {
			if !r.sp.ended && r.sp.start < horizon {
				horizon = r.sp.start
			}
		}
	}
	n := 0
	for _, iv := range d.pending {
		if e := iv.End.UnixNano(); !all && e > horizon && (l.p.History <= 0 || e > forced) {
			break
		}
		l.settleInterval(d, iv)
		n++
	}
	d.pending = append(d.pending[:0], d.pending[n:]...)
}

func (l *Ledger) settleInterval(d *device, iv Interval) {
	t0, t1 := iv.Start.UnixNano(), iv.End.UnixNano()
	dt := float64(t1-t0) / 1e9
	mode := l.p.Weighting
	if d.fit != nil && t0 >= d.refitAt {
		// Refitted at fixed points in time, from the intervals before
		// them: the coefficients do not depend on when Settle was called.
		if b, ok := d.fit.solve(); ok {
			d.coef.prompt, d.coef.decode, d.coef.source = b[2], b[3], "fitted"
		}
		d.refitAt = floorTo(t0, int64(refitEvery)) + int64(refitEvery)
	}
	l.w = slices.Grow(l.w[:0], len(d.spans))[:len(d.spans)]
	l.o = slices.Grow(l.o[:0], len(d.spans))[:len(d.spans)]
	fitAlpha := mode == WeightTokens && d.fit != nil
	if fitAlpha {
		l.tp = slices.Grow(l.tp[:0], len(d.spans))[:len(d.spans)]
		l.td = slices.Grow(l.td[:0], len(d.spans))[:len(d.spans)]
	}
	segs := l.segs[:0]
	sorted, whole := true, false
	var sumW, sumO, tokP, tokD float64
	skipped := false
	// For the fit: the prefill phases of spans with exact phases, their
	// decoding sequence-seconds, and whether every span here has them.
	pre := l.pre[:0]
	decodeS, exact := 0.0, d.fit != nil

	for k, r := range d.spans {
		sp := r.sp
		l.w[k], l.o[k] = 0, 0
		if sp.ended && !sp.s.Served {
			continue
		}
		a, b := max(sp.start, t0), t1
		if sp.ended {
			a, b = max(a, sp.ph.in), min(sp.end, t1)
		}
		if b <= a {
			continue
		}
		if !sp.ended {
			if mode != WeightTime {
				// Only reached when the interval is older than the history:
				// the open span is not charged for it, and says so.
				sp.truncated = true
				sp.acc[r.i].from = t1
				skipped = true
				continue
			}
			sp.acc[r.i].to = t1 // charged to the interval's end while open
		}
		if exact {
			if ph := &sp.ph; ph.exact {
				if a < ph.ft {
					pre = append(pre, segment{ph.in, ph.ft})
				}
				if b > ph.ft {
					decodeS += float64(b-max(a, ph.ft)) / 1e9
				}
			} else {
				exact = false
			}
		}
		w, o, p, dd := l.p.claim(&sp.ph, a, b, d.host, d.coef)
		l.w[k], l.o[k] = w, o
		if fitAlpha {
			l.tp[k], l.td[k] = p, dd
		}
		sumW += w
		sumO += o
		tokP += p
		tokD += dd
		if a == t0 && b == t1 {
			whole = true
		} else if !whole {
			// In order of start, as the spans are, unless the phase model
			// moved a start.
			sorted = sorted && (len(segs) == 0 || a >= segs[len(segs)-1].a)
			segs = append(segs, segment{a, b})
		}
	}
	covered := 0.0
	switch {
	case sumO == 0:
	case whole:
		covered = 1
	default:
		if !sorted {
			slices.SortFunc(segs, func(x, y segment) int { return cmp.Compare(x.a, y.a) })
		}
		covered = min(union(segs)/float64(t1-t0), 1)
	}
	l.segs = segs[:0]

	st := Settlement{Interval: iv, Covered: covered}
	if mode == WeightTokens && sumO > 0 {
		st.PromptTokenWeight, st.TokenWeight = d.coef.alpha, alphaConfigured
		if d.host && l.p.FitPromptTokenWeight {
			st.TokenWeight = alphaHost
		}
		if fitAlpha {
			sumW = l.fitAlpha(d, &st, iv.Joules*covered, tokP, tokD)
		}
	}
	if mode == WeightMarginal && sumO > 0 {
		st.PromptJPerToken, st.DecodeJPerToken, st.Coefficients = d.coef.prompt, d.coef.decode, d.coef.source
		st.SumOverlapS = sumO
		// The linear-cost Shapley split: each request's token part is its
		// own; what the tokens do not explain is fixed, shared by overlap.
		if fixed := iv.Joules*covered - sumW; fixed > 0 {
			st.FixedJ = fixed
			sumW = 0
			for k := range l.w {
				if l.o[k] > 0 {
					l.w[k] += fixed * l.o[k] / sumO
					sumW += l.w[k]
				}
			}
		}
	}
	if sumW == 0 && sumO > 0 {
		st.ByOverlap = true
		copy(l.w, l.o)
		sumW = sumO
	}
	st.SumWeight = sumW

	static := 0.0
	if d.host {
		static = l.p.StaticWatts * dt
	}
	dep, emb, wearEnded := d.params.wear(t0, t1)
	if sumW > 0 {
		u := l.p.unitOf(&st, d.params, d.host)
		bit := methodBit(iv.Method)
		for k, r := range d.spans {
			w := l.w[k]
			if w == 0 && l.o[k] == 0 {
				continue
			}
			wear := w
			if u.byOverlap {
				wear = l.o[k]
			}
			acc := &r.sp.acc[r.i]
			acc.add(&u, w, wear, covered)
			acc.methods |= bit
		}
		l.settled = append(l.settled, st)
	}
	if covered < 1 {
		mid := midpoint(t0, t1)
		idle := amounts{
			joules: iv.Joules * (1 - covered), static: static * (1 - covered),
			depreciation: dep * (1 - covered), embodied: emb * (1 - covered),
		}
		idle.co2, idle.co2m, idle.cost = l.p.priced(idle.joules+idle.static, mid)
		is := l.p.idleOf(d.id, iv.Start, iv.End, idle, iv.Method)
		is.Unabsorbed, is.WearEnded = covered == 0, wearEnded
		l.idle = append(l.idle, is)
	}
	if d.fit != nil {
		x := [rawVars]float64{dt * (1 - covered), dt * covered, tokP, tokD, 0}
		spread := 0.0
		if exact && sumO > 0 {
			x[3], x[4] = decodeSteps(pre, t0, t1, decodeS, dt*covered)
			spread = tokD
		}
		d.fit.block(t1, skipped, x, spread, iv.Joules)
	}
	l.pre = pre[:0]
	d.settledTo = iv.End

	// Spans that ended by the end of this interval are done on this device.
	keep := d.spans[:0]
	for _, r := range d.spans {
		if sp := r.sp; !sp.ended || sp.end > t1 {
			keep = append(keep, r)
		}
	}
	clear(d.spans[len(keep):])
	d.spans = keep
}

// fitAlpha sets the prompt token weight of an interval in tokens weighting
// from the device's fitted cost model (the configured weight while it has
// none), reweighs the interval's spans with it and returns their sum.
func (l *Ledger) fitAlpha(d *device, st *Settlement, activeJ, tokP, tokD float64) (sumW float64) {
	alpha, src := l.p.PromptTokenWeight, alphaDefault
	if a, ok := d.coef.fittedAlpha(activeJ, tokP, tokD); ok {
		alpha, src = a, alphaFitted
	}
	st.PromptTokenWeight, st.TokenWeight = alpha, src
	st.PromptJPerToken, st.DecodeJPerToken, st.Coefficients = d.coef.prompt, d.coef.decode, d.coef.source
	for k, r := range d.spans {
		if l.o[k] > 0 && r.sp.ph.tokens {
			l.w[k] = tokenWeight(alpha, l.tp[k], l.td[k])
		}
		sumW += l.w[k]
	}
	return sumW
}

// decodeSteps splits the decoding of an interval [t0, t1) with busy
// seconds for the fit (fitter): the tokens decoded in its prefill steps,
// one per decoding sequence per step, and the decoding sequence-seconds
// outside them. pre holds the prefill phases [scheduled, first token) of
// the interval's spans; those that overlap are one step (a prefill chunked
// over several steps counts one: its neighbours' phases are its steps),
// and decodeS sequence-seconds are taken as spread evenly over the busy time.
func decodeSteps(pre []segment, t0, t1 int64, decodeS, busy float64) (inPrefill, outside float64) {
	if busy <= 0 {
		return 0, 0
	}
	slices.SortFunc(pre, func(x, y segment) int { return cmp.Compare(x.a, y.a) })
	var steps, in float64
	for i := 0; i < len(pre); {
		c := pre[i]
		for i++; i < len(pre) && pre[i].a < c.b; i++ {
			c.b = max(c.b, pre[i].b)
		}
		if o := min(c.b, t1) - max(c.a, t0); o > 0 {
			steps += float64(o) / float64(c.b-c.a)
			in += float64(o) / 1e9
		}
	}
	n := decodeS / busy // mean decoding sequences
	return n * steps, n * max(busy-in, 0)
}

// union is the total length of a set of segments sorted by start.
func union(segs []segment) float64 {
	if len(segs) == 0 {
		return 0
	}
	var total int64
	cur := segs[0]
	for _, s := range segs[1:] {
		if s.a > cur.b {
			total += cur.b - cur.a
			cur = s
			continue
		}
		cur.b = max(cur.b, s.b)
	}
	return float64(total + cur.b - cur.a)
}
