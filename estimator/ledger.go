package estimator

import (
	"cmp"
	"errors"
	"fmt"
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
	pre     []segment // prefill phases, for the fit
	pruneAt int       // size of usedTS at which it is next pruned
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
	b := Span{ID: s.ID, Key: s.Key, Upstream: s.Upstream, Model: s.Model, Tenant: s.Tenant, Namespace: s.Namespace, Pod: s.Pod,
		Start: s.Start, Devices: s.Devices, Served: true}
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
		s.Namespace = cmp.Or(s.Namespace, sp.s.Namespace)
		s.Pod = cmp.Or(s.Pod, sp.s.Pod)
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

// Devices lists the metered devices, sorted.
func (l *Ledger) Devices() []string { return slices.Clone(l.order) }
