package estimator

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// Ledger attributes meter intervals to request spans. It is not safe for
// concurrent use: one goroutine owns it and feeds it in time order.
//
// The life of a request: Begin when it arrives (in time weighting it is
// then charged for every interval that settles while it runs), End when it
// finishes (with its tokens and status), and a Record out of Settle once
// every device it used has settled past its end.
type Ledger struct {
	p       Params
	hash    string
	devs    map[string]*device
	order   []string // device ids, sorted: the settle order
	spans   map[string]*span
	waiting []*span // ended, not yet final
	ready   []*span // scratch of collect: the spans it records
	idle    []IdleShare
	refunds []refund // of unserved requests, returned at the next settle
	settled []Settlement
	usedTS  map[int64]struct{}
	maxTS   int64

	// scratch of the interval being settled, parallel to device.spans
	w, o    []float64
	tp, td  []float64 // tokens weighting with a fitted α: each span's tokens
	segs    []segment
	pruneAt int // size of usedTS at which it is next pruned
}

type device struct {
	id        string
	host      bool
	params    DeviceParams
	pending   []Interval // closed, not yet settled, in time order
	lastEnd   time.Time  // end of the last interval added
	settledTo time.Time  // end of the last interval settled
	spans     []ref      // spans that may still overlap an unsettled interval
	fit       *fitter    // marginal weighting with fitted coefficients
	refitAt   int64      // ns: the fit is solved again at the first interval starting after
	coef      coefficients
}

// refitEvery is how often the marginal coefficients are fitted again.
const refitEvery = 10 * time.Second

// ref is a span on one device: i is the device's index in span.devices.
type ref struct {
	sp *span
	i  int
}

type span struct {
	s         Span
	key       string // s.Key, else s.ID: the key of Ledger.spans
	start     int64  // ns
	end       int64  // ns, once ended
	ph        phases
	devices   []string // known devices, host included
	ended     bool
	truncated bool
	acc       []share // one per device, same order as devices
}

type share struct {
	amounts         // active: the request's own part
	loaded  amounts // active with the idle of its intervals absorbed
	seconds float64 // of the device's covered time, by wear weight
	methods methodSet
	from    int64 // see DeviceShare.ChargedFrom, ChargedTo
	to      int64
	cut     bool // charging ended at to, before the end
	// wearEnded: an interval charged was past the device's service life.
	wearEnded bool
}

// amounts are a share's quantities as the ledger sums them: co2, co2m and
// cost are joules × the rate per kWh, converted once, at the end.
type amounts struct {
	joules, static, depreciation, embodied, co2, co2m, cost float64
}

func (a amounts) isZero() bool { return a == amounts{} }

type segment struct{ a, b int64 }

type methodSet uint8

const (
	setCounter methodSet = 1 << iota
	setPowerIntegral
	setModelled
	setStatic
	setMixed // a share already mixed, summed into a record
)

// methodBit is a method's bit in a methodSet; none for MethodNone.
func methodBit(m Method) methodSet {
	switch m {
	case MethodCounter:
		return setCounter
	case MethodPowerIntegral:
		return setPowerIntegral
	case MethodModelled:
		return setModelled
	case MethodStatic:
		return setStatic
	case MethodMixed:
		return setMixed
	}
	return 0
}

func (m methodSet) method() Method {
	switch m {
	case 0:
		return MethodNone
	case setCounter:
		return MethodCounter
	case setPowerIntegral:
		return MethodPowerIntegral
	case setModelled:
		return MethodModelled
	case setStatic:
		return MethodStatic
	}
	return MethodMixed
}

// New returns an empty ledger.
func New(p Params) (*Ledger, error) {
	switch p.Weighting {
	case WeightTime, WeightTokens, WeightMarginal:
	case "":
		p.Weighting = WeightTokens
	default:
		return nil, fmt.Errorf("weighting %q: want time, tokens or marginal", p.Weighting)
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	m := p.Marginal
	fitTokens := p.Weighting == WeightTokens && p.FitPromptTokenWeight
	if (p.Weighting == WeightMarginal && m.Fit || fitTokens) && m.FitWindow <= 0 {
		p.Marginal.FitWindow = time.Hour
	}
	l := &Ledger{
		p:      p,
		hash:   p.Hash(),
		devs:   map[string]*device{},
		spans:  map[string]*span{},
		usedTS: map[int64]struct{}{},
	}
	for id, dp := range p.Devices {
		d := &device{id: id, host: id == HostDevice, params: dp}
		switch {
		case fitTokens && !d.host:
			d.fit = &fitter{tau: p.Marginal.FitWindow.Seconds()}
			d.coef = coefficients{source: "warming", alpha: p.PromptTokenWeight}
		case p.Weighting == WeightTokens:
			// A configured weight, or the host under auto: its energy is
			// mostly fixed (and often modelled or static), so a fitted
			// weight would be noise; it keeps the fallback, unfitted.
			d.coef.alpha = p.PromptTokenWeight
		case p.Weighting == WeightMarginal:
			switch {
			case d.host:
				d.coef.source = "host"
			case m.Fit:
				d.fit = &fitter{tau: p.Marginal.FitWindow.Seconds()}
				d.coef.source = "warming"
			default:
				d.coef = coefficients{prompt: m.PromptJPerToken, decode: m.DecodeJPerToken, source: "configured"}
			}
		}
		l.devs[id] = d
		l.order = append(l.order, id)
	}
	sort.Strings(l.order)
	return l, nil
}

// Params returns the parameters the ledger was made with.
func (l *Ledger) Params() Params { return l.p }

// ErrUnknownDevice is returned for an interval of a device not in Params.Devices.
var ErrUnknownDevice = errors.New("unknown device")

// AddInterval adds a closed meter interval. Intervals of one device must come
// in time order and must not overlap; a gap is energy no meter saw.
func (l *Ledger) AddInterval(iv Interval) error {
	d, ok := l.devs[iv.Device]
	if !ok {
		return fmt.Errorf("interval of %q: %w", iv.Device, ErrUnknownDevice)
	}
	switch {
	case !iv.End.After(iv.Start):
		return fmt.Errorf("interval of %q: end %v is not after start %v", iv.Device, iv.End, iv.Start)
	case iv.Start.Before(d.lastEnd):
		return fmt.Errorf("interval of %q starts at %v, before the previous one ended (%v)", iv.Device, iv.Start, d.lastEnd)
	case iv.Joules < 0 || iv.Joules != iv.Joules || iv.Joules > 1e300:
		return fmt.Errorf("interval of %q: joules %v is not a non-negative number", iv.Device, iv.Joules)
	}
	// Wall clock only: a monotonic reading would make Sub disagree with
	// UnixNano, and the arithmetic uses the latter throughout.
	iv.Start, iv.End = iv.Start.Round(0), iv.End.Round(0)
	d.pending = append(d.pending, iv)
	d.lastEnd = iv.End
	return nil
}

// Begin records that a request started; it is charged from then on. Of s
// it keeps what is known when a request starts: ID, Key, Start, Devices,
// and Upstream, Model and Tenant where known, which a request still open
// at Close is recorded with (End fills in the last three where its span
// leaves them empty). A second Begin of the same key is ignored.
func (l *Ledger) Begin(s Span) {
	k := spanKey(s)
	if _, ok := l.spans[k]; ok {
		return
	}
	b := Span{ID: s.ID, Key: s.Key, Upstream: s.Upstream, Model: s.Model, Tenant: s.Tenant, Start: s.Start, Devices: s.Devices, Served: true}
	l.track(&span{s: b, key: k, start: s.Start.UnixNano()}, s.Devices)
}

// spanKey is the key of a request in the ledger: its Key, else its ID.
func spanKey(s Span) string {
	if s.Key != "" {
		return s.Key
	}
	return s.ID
}

// End records a finished request. A request never begun is charged from
// the intervals not yet settled, and flagged if part of it was missed.
func (l *Ledger) End(s Span) {
	sp, ok := l.spans[spanKey(s)]
	if !ok {
		sp = &span{s: s, key: spanKey(s), start: s.Start.UnixNano()}
		l.track(sp, s.Devices)
	} else if sp.ended {
		return // a second End changes nothing
	} else {
		s.Upstream = cmp.Or(s.Upstream, sp.s.Upstream)
		s.Model = cmp.Or(s.Model, sp.s.Model)
		s.Tenant = cmp.Or(s.Tenant, sp.s.Tenant)
	}
	sp.s = s
	sp.end = max(s.End.UnixNano(), sp.start)
	sp.ph = phasesOf(&s, l.p.Weighting != WeightTime)
	sp.ended = true
	if !s.Served {
		// Whatever it was charged while in flight goes back to idle: a
		// request the GPU never served takes no share.
		for i, dev := range sp.devices {
			a := sp.acc[i]
			if a.amounts.isZero() && a.loaded.isZero() {
				continue
			}
			l.refunds = append(l.refunds, refund{device: dev, start: s.Start, end: s.End, a: a})
			sp.acc[i] = share{}
		}
	}
	l.waiting = append(l.waiting, sp)
}

// refund is what an unserved request was charged on one device while in
// flight, going back to idle.
type refund struct {
	device     string
	start, end time.Time
	a          share
}

// refund returns what unserved requests were charged to idle, in an order
// that does not depend on the order their ends arrived in: all of their
// loaded share as unabsorbed idle, and the part of it that was absorbed
// idle taken back from the absorbed idle.
func (l *Ledger) refund() {
	slices.SortFunc(l.refunds, func(a, b refund) int {
		if c := a.end.Compare(b.end); c != 0 {
			return c
		}
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.device, b.device); c != 0 {
			return c
		}
		return cmp.Compare(a.a.joules, b.a.joules)
	})
	for _, r := range l.refunds {
		m := r.a.methods.method()
		un := l.p.idleOf(r.device, r.start, r.end, r.a.loaded, m)
		un.Unabsorbed, un.WearEnded = true, r.a.wearEnded
		l.idle = append(l.idle, un)
		back := r.a.amounts
		back.scale(-1)
		back.plus(r.a.loaded)
		if !back.isZero() {
			back.scale(-1)
			ab := l.p.idleOf(r.device, r.start, r.end, back, m)
			ab.WearEnded = r.a.wearEnded
			l.idle = append(l.idle, ab)
		}
	}
	l.refunds = l.refunds[:0]
}

func (a *amounts) scale(f float64) {
	a.joules *= f
	a.static *= f
	a.depreciation *= f
	a.embodied *= f
	a.co2 *= f
	a.co2m *= f
	a.cost *= f
}

func (a *amounts) plus(b amounts) {
	a.joules += b.joules
	a.static += b.static
	a.depreciation += b.depreciation
	a.embodied += b.embodied
	a.co2 += b.co2
	a.co2m += b.co2m
	a.cost += b.cost
}

// idleOf is an idle share of device id over [start, end) holding a (whose
// co2, co2m and cost are joules × rate, as a share sums them), with the
// facility energy, carbon, water and cost derived from it.
func (p *Params) idleOf(id string, start, end time.Time, a amounts, m Method) IdleShare {
	it := a.joules + a.static
	is := IdleShare{
		Device: id, Start: start, End: end, Joules: a.joules, StaticJoules: a.static,
		DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied,
		FacilityEnergyJ: it * p.PUE,
		CO2eG:           a.co2 * p.PUE / 3.6e6,
		EnergyCost:      a.cost * p.PUE / 3.6e6,
		WaterOnsiteL:    it / 3.6e6 * p.WUEOnsiteLPerKWh,
		WaterOffsiteL:   it * p.PUE / 3.6e6 * p.WaterOffsiteLPerKWh,
		Method:          m,
	}
	if p.CarbonMarket != nil {
		is.CO2eMarketG = a.co2m * p.PUE / 3.6e6
	}
	return is
}

func (l *Ledger) track(sp *span, devices []string) {
	for _, id := range devices {
		if _, ok := l.devs[id]; ok && id != HostDevice && !slices.Contains(sp.devices, id) {
			sp.devices = append(sp.devices, id)
		}
	}
	if _, ok := l.devs[HostDevice]; ok {
		sp.devices = append(sp.devices, HostDevice)
	}
	sp.acc = make([]share, len(sp.devices))
	for i, id := range sp.devices {
		d := l.devs[id]
		if to := d.settledTo.UnixNano(); !d.settledTo.IsZero() && to > sp.start {
			sp.truncated = true
			sp.acc[i].from = to
		}
		// Kept in order of start and id, whatever the order of arrival, so
		// that sums over the spans of an interval are always added up in
		// the same order: byte-identical records.
		k := sort.Search(len(d.spans), func(k int) bool { return sp.before(d.spans[k].sp) })
		d.spans = slices.Insert(d.spans, k, ref{sp, i})
	}
	l.spans[sp.key] = sp
}

func (sp *span) before(o *span) bool {
	if sp.start != o.start {
		return sp.start < o.start
	}
	return sp.key < o.key
}

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
			acc.wearEnded = acc.wearEnded || wearEnded
		}
		l.settled = append(l.settled, st)
	}
	if covered < 1 {
		mid := midpoint(t0, t1)
		idle := amounts{
			joules: iv.Joules * (1 - covered), static: static * (1 - covered),
			depreciation: dep * (1 - covered), embodied: emb * (1 - covered),
		}
		e := idle.joules + idle.static
		idle.co2, idle.cost = e*l.p.Carbon.At(mid), e*l.p.Price.At(mid)
		if l.p.CarbonMarket != nil {
			idle.co2m = e * l.p.CarbonMarket.At(mid)
		}
		is := l.p.idleOf(d.id, iv.Start, iv.End, idle, iv.Method)
		is.Unabsorbed, is.WearEnded = covered == 0, wearEnded
		l.idle = append(l.idle, is)
	}
	if d.fit != nil {
		d.fit.block(t1, skipped, [fitVars]float64{dt * (1 - covered), dt * covered, tokP, tokD}, iv.Joules)
	}
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

func (l *Ledger) collect(now time.Time, all bool) Output {
	var out Output
	keep, done := l.waiting[:0], l.ready[:0]
	for _, sp := range l.waiting {
		if !all && !l.final(sp, now) {
			keep = append(keep, sp)
			continue
		}
		done = append(done, sp)
	}
	clear(l.waiting[len(keep):])
	l.waiting = keep
	// Records are large: allocated once, at their number (a slice grown
	// record by record cost more than making them).
	if len(done) > 0 {
		out.Records = make([]Record, 0, len(done))
	}
	for _, sp := range done {
		out.Records = append(out.Records, l.record(sp, all))
		delete(l.spans, sp.key)
	}
	clear(done)
	l.ready = done[:0]
	slices.SortFunc(out.Records, func(a, b Record) int {
		if c := a.End.Compare(b.End); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	for i := range out.Records {
		out.Records[i].Time = l.uniqueTime(out.Records[i].End)
	}
	out.Idle, l.idle = l.idle, nil
	out.Settled, l.settled = l.settled, nil
	return out
}

// abandon ends an open span at Close: status abandoned, tokens unknown,
// ending where the latest of its devices' intervals ends (it is charged
// until then), flagged truncated.
func (l *Ledger) abandon(sp *span) {
	end := sp.start
	for _, id := range sp.devices {
		end = max(end, l.devs[id].lastEnd.UnixNano())
	}
	s := &sp.s
	s.End, s.Status, s.UsageSource = time.Unix(0, end).UTC(), StatusAbandoned, UsageUnknown
	s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.ReasoningTokens = -1, -1, -1, -1
	sp.end, sp.ended, sp.truncated = end, true, true
	sp.ph = phasesOf(s, l.p.Weighting != WeightTime)
}

func (l *Ledger) final(sp *span, now time.Time) bool {
	if !sp.s.Served {
		return true
	}
	waiting := false
	for _, id := range sp.devices {
		d := l.devs[id]
		if !d.settledTo.Before(sp.s.End) {
			continue
		}
		if l.p.History <= 0 || now.Sub(sp.s.End) <= l.p.History || !d.lastEnd.Before(sp.s.End) {
			// Intervals up to its end are due (at the latest when History
			// forces them): wait.
			waiting = true
		}
	}
	if waiting {
		return false
	}
	// Final, unless a device stopped reporting: then give up waiting for
	// it, and charge what was seen.
	for i, id := range sp.devices {
		if d := l.devs[id]; d.settledTo.Before(sp.s.End) {
			l.cut(sp, i, d)
		}
	}
	return true
}

// cut ends the charging of span sp on device d (index i) where the device's
// settled intervals end: the rest of the request is not charged there.
func (l *Ledger) cut(sp *span, i int, d *device) {
	sp.truncated = true
	sp.acc[i].to, sp.acc[i].cut = max(d.settledTo.UnixNano(), sp.start), true
	for k, r := range d.spans {
		if r.sp == sp {
			d.spans = slices.Delete(d.spans, k, k+1)
			break
		}
	}
}

func (l *Ledger) record(sp *span, all bool) Record {
	r := Record{
		Span:             sp.s,
		Node:             l.p.Node,
		Weighting:        l.p.Weighting,
		Simulated:        l.p.Simulated,
		MethodVersion:    MethodVersion,
		ParamsHash:       l.hash,
		HistoryTruncated: sp.truncated,
	}
	if all && sp.s.Served {
		for i, id := range sp.devices {
			if d := l.devs[id]; d.settledTo.Before(sp.s.End) {
				l.cut(sp, i, d)
				r.HistoryTruncated = true
			}
		}
	}
	r.PerDevice = make([]DeviceShare, len(sp.devices))
	for i, id := range sp.devices {
		r.PerDevice[i] = l.p.deviceShare(id, &sp.acc[i], sp.start, sp.end)
	}
	l.p.finish(&r)
	return r
}

// deviceShare turns a span's accumulated share of one device into its part
// of the record.
func (p *Params) deviceShare(id string, a *share, start, end int64) DeviceShare {
	q := p.quantities(a.amounts)
	ds := DeviceShare{
		Device: id, Joules: q.Joules, StaticJoules: q.StaticJoules,
		DepreciationCost: q.DepreciationCost, EmbodiedCO2eG: q.EmbodiedCO2eG,
		CO2eG: q.CO2eG, CO2eMarketG: q.CO2eMarketG, EnergyCost: q.EnergyCost,
		Method: a.methods.method(), Loaded: p.quantities(a.loaded), WearEnded: a.wearEnded,
	}
	if a.from > start {
		ds.ChargedFrom = time.Unix(0, a.from).UTC()
	}
	if a.to > end || a.cut {
		ds.ChargedTo = time.Unix(0, a.to).UTC()
	}
	return ds
}

// quantities converts summed amounts: carbon and cost of facility energy.
func (p *Params) quantities(a amounts) Quantities {
	q := Quantities{
		Joules: a.joules, StaticJoules: a.static, DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied,
		CO2eG: a.co2 * p.PUE / 3.6e6, EnergyCost: a.cost * p.PUE / 3.6e6,
	}
	if p.CarbonMarket != nil {
		q.CO2eMarketG = a.co2m * p.PUE / 3.6e6
	}
	return q
}

// finish sums a record's totals from its PerDevice shares and derives the
// facility, carbon, water, money, training and loaded figures.
func (p *Params) finish(r *Record) {
	var gpuMethods, hostMethods methodSet
	var hostE, loadedHostE float64
	var lq Quantities
	for _, ds := range r.PerDevice {
		if ds.Device == HostDevice {
			r.HostEnergyJ += ds.Joules
			r.StaticEnergyJ += ds.StaticJoules
			hostMethods |= methodBit(ds.Method)
			hostE += ds.Joules + ds.StaticJoules
			loadedHostE += ds.Loaded.Joules + ds.Loaded.StaticJoules
		} else {
			r.GPUEnergyJ += ds.Joules
			gpuMethods |= methodBit(ds.Method)
			r.LoadedGPUEnergyJ += ds.Loaded.Joules
		}
		r.DepreciationCost += ds.DepreciationCost
		r.EmbodiedCO2eG += ds.EmbodiedCO2eG
		r.CO2eG += ds.CO2eG
		r.CO2eMarketG += ds.CO2eMarketG
		r.EnergyCost += ds.EnergyCost
		r.WearEnded = r.WearEnded || ds.WearEnded
		lq.Joules += ds.Loaded.Joules
		lq.StaticJoules += ds.Loaded.StaticJoules
		lq.DepreciationCost += ds.Loaded.DepreciationCost
		lq.EmbodiedCO2eG += ds.Loaded.EmbodiedCO2eG
		lq.CO2eG += ds.Loaded.CO2eG
		lq.CO2eMarketG += ds.Loaded.CO2eMarketG
		lq.EnergyCost += ds.Loaded.EnergyCost
	}
	r.GPUMeter, r.HostMeter = gpuMethods.method(), hostMethods.method()
	r.ITEnergyJ = r.GPUEnergyJ + r.HostEnergyJ + r.StaticEnergyJ
	r.FacilityEnergyJ = r.ITEnergyJ * p.PUE
	itKWh, facKWh := r.ITEnergyJ/3.6e6, r.FacilityEnergyJ/3.6e6
	r.HasMarketCarbon = p.CarbonMarket != nil
	r.WaterOnsiteL = itKWh * p.WUEOnsiteLPerKWh
	r.WaterOffsiteL = facKWh * p.WaterOffsiteLPerKWh
	r.WaterL = r.WaterOnsiteL + r.WaterOffsiteL
	r.Factors = p.Factors

	tokens := float64(r.Tokens())
	if m, ok := p.Models[r.Model]; ok {
		r.TrainingCost = tokens * m.TrainingCostPerToken
		r.TrainingCO2eG, r.HasTrainingCO2e = tokens*m.TrainingCO2eGPerToken, m.TrainingCO2eGPerToken > 0
		r.TrainingEnergyJ, r.HasTrainingEnergy = tokens*m.TrainingEnergyJPerToken, m.TrainingEnergyJPerToken > 0
		r.LivingLabourS, r.HasLivingLabour = tokens*m.LivingLabourSPerToken, m.LivingLabourSPerToken > 0
	}
	r.DeadLabourCost = r.DepreciationCost + r.EnergyCost + r.TrainingCost

	switch {
	case r.GPUEnergyJ > 0:
		r.IdleUplift = max(r.LoadedGPUEnergyJ/r.GPUEnergyJ-1, 0)
	case hostE > 0:
		r.IdleUplift = max(loadedHostE/hostE-1, 0)
	}
	r.LoadedITEnergyJ = lq.Joules + lq.StaticJoules
	r.LoadedFacilityEnergyJ = r.LoadedITEnergyJ * p.PUE
	r.LoadedCO2eG = lq.CO2eG
	r.LoadedCO2eMarketG = lq.CO2eMarketG
	r.LoadedEmbodiedCO2eG = lq.EmbodiedCO2eG
	r.LoadedWaterL = r.LoadedITEnergyJ/3.6e6*p.WUEOnsiteLPerKWh + r.LoadedFacilityEnergyJ/3.6e6*p.WaterOffsiteLPerKWh
	r.LoadedDepreciationCost = lq.DepreciationCost
	r.LoadedEnergyCost = lq.EnergyCost
	r.LoadedDeadLabourCost = lq.DepreciationCost + lq.EnergyCost + r.TrainingCost
}

// uniqueTime returns t in nanoseconds, bumped past any timestamp already
// given to a record, so that no two records share series and time.
func (l *Ledger) uniqueTime(t time.Time) time.Time {
	ts := t.UnixNano()
	for {
		if _, used := l.usedTS[ts]; !used {
			break
		}
		ts++
	}
	l.usedTS[ts] = struct{}{}
	l.maxTS = max(l.maxTS, ts)
	if len(l.usedTS) > max(l.pruneAt, 1<<14) {
		horizon := l.maxTS - int64(max(l.p.History, time.Minute))
		for k := range l.usedTS {
			if k < horizon {
				delete(l.usedTS, k)
			}
		}
		// Prune again only once the map has doubled: a busy node keeps
		// more than 1<<14 timestamps within the horizon, and scanning them
		// all at every record made each record cost O(records).
		l.pruneAt = 2 * len(l.usedTS)
	}
	return time.Unix(0, ts)
}

// SettledTo is the end of the last interval of a device that was
// attributed; zero for an unknown device or before the first.
func (l *Ledger) SettledTo(device string) time.Time {
	if d, ok := l.devs[device]; ok {
		return d.settledTo
	}
	return time.Time{}
}

// Pending reports how much the ledger holds: unsettled intervals and spans
// not yet final, for metrics.
func (l *Ledger) Pending() (intervals, spans int) {
	for _, d := range l.devs {
		intervals += len(d.pending)
	}
	return intervals, len(l.spans)
}

// Unmetered charges the wear of device id over [from, to), time no meter
// saw (the daemon was down), to idle: its depreciation and embodied carbon
// as unabsorbed idle, marked unmetered, with no energy. The hardware aged
// whether or not anyone measured it; nothing is known of its energy. ok is
// false for an unknown device or an empty span.
func (l *Ledger) Unmetered(id string, from, to time.Time) (IdleShare, bool) {
	d, known := l.devs[id]
	if !known || !to.After(from) {
		return IdleShare{}, false
	}
	dep, emb, ended := d.params.wear(from.UnixNano(), to.UnixNano())
	is := l.p.idleOf(id, from.UTC(), to.UTC(), amounts{depreciation: dep, embodied: emb}, MethodUnmetered)
	is.Unabsorbed, is.Unmetered, is.WearEnded = true, true, ended
	return is, true
}

// Devices lists the metered devices, sorted.
func (l *Ledger) Devices() []string { return slices.Clone(l.order) }
