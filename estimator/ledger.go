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
// The life of a request: Begin when it arrives (it is then charged, by time,
// for every interval that settles while it runs), End when it finishes (with
// its tokens and status), and a Record out of Settle once every device it
// used has settled past its end.
type Ledger struct {
	p       Params
	hash    string
	devs    map[string]*device
	order   []string // device ids, sorted: the settle order
	spans   map[string]*span
	waiting []*span // ended, not yet final
	idle    []IdleShare
	usedTS  map[int64]struct{}
	maxTS   int64
	pruneAt int // size of usedTS at which it is next pruned
	scratch []segment
}

type device struct {
	id        string
	params    DeviceParams
	pending   []Interval // closed, not yet settled, in time order
	lastEnd   time.Time  // end of the last interval added
	settledTo time.Time  // end of the last interval settled
	spans     []*span    // spans that may still overlap an unsettled interval
}

type span struct {
	s         Span
	start     time.Time
	devices   []string // known devices, host included
	ended     bool
	truncated bool
	acc       []share // one per device, same order as devices
	weight    float64 // scratch: weight in the interval being settled
	overlap   float64 // scratch: seconds of overlap
}

type share struct {
	joules, static, depreciation, embodied float64
	methods                                methodSet
}

type segment struct{ a, b int64 }

type methodSet uint8

var methodBits = map[Method]methodSet{MethodCounter: 1, MethodPowerIntegral: 2, MethodModelled: 4, MethodStatic: 8}

func (m methodSet) method() Method {
	var found Method
	n := 0
	for meth, bit := range methodBits {
		if m&bit != 0 {
			found = meth
			n++
		}
	}
	switch n {
	case 0:
		return MethodNone
	case 1:
		return found
	}
	return MethodMixed
}

// New returns an empty ledger.
func New(p Params) (*Ledger, error) {
	switch p.Weighting {
	case WeightTime, WeightTokens:
	case "":
		p.Weighting = WeightTime
	default:
		return nil, fmt.Errorf("weighting %q is not implemented", p.Weighting)
	}
	if p.PUE < 1 {
		return nil, fmt.Errorf("PUE %v is below 1", p.PUE)
	}
	l := &Ledger{
		p:      p,
		hash:   p.Hash(),
		devs:   map[string]*device{},
		spans:  map[string]*span{},
		usedTS: map[int64]struct{}{},
	}
	for id, dp := range p.Devices {
		l.devs[id] = &device{id: id, params: dp}
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
	case iv.Joules < 0 || iv.Joules != iv.Joules:
		return fmt.Errorf("interval of %q: joules %v is not a non-negative number", iv.Device, iv.Joules)
	}
	d.pending = append(d.pending, iv)
	d.lastEnd = iv.End
	return nil
}

// Begin records that a request started; it is charged from then on. A
// second Begin of the same id is ignored.
func (l *Ledger) Begin(id string, start time.Time, devices []string) {
	if _, ok := l.spans[id]; ok {
		return
	}
	l.track(&span{s: Span{ID: id, Start: start, Devices: devices, Served: true}, start: start}, devices)
}

// End records a finished request. A request never begun is charged from
// the intervals not yet settled, and flagged if part of it was missed.
func (l *Ledger) End(s Span) {
	sp, ok := l.spans[s.ID]
	if !ok {
		sp = &span{s: s, start: s.Start}
		l.track(sp, s.Devices)
	} else if sp.ended {
		return // a second End changes nothing
	}
	sp.s = s
	sp.ended = true
	if !s.Served {
		// Whatever it was charged while in flight goes back to idle: a
		// request the GPU never served takes no share.
		for i, dev := range sp.devices {
			a := sp.acc[i]
			if a.joules == 0 && a.static == 0 && a.depreciation == 0 && a.embodied == 0 {
				continue
			}
			l.idle = append(l.idle, IdleShare{Device: dev, Start: s.Start, End: s.End, Joules: a.joules,
				StaticJoules: a.static, DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied, Method: a.methods.method()})
			sp.acc[i] = share{}
		}
	}
	l.waiting = append(l.waiting, sp)
}

func (l *Ledger) track(sp *span, devices []string) {
	for _, id := range devices {
		if _, ok := l.devs[id]; ok && id != HostDevice {
			sp.devices = append(sp.devices, id)
		}
	}
	if _, ok := l.devs[HostDevice]; ok {
		sp.devices = append(sp.devices, HostDevice)
	}
	sp.acc = make([]share, len(sp.devices))
	for _, id := range sp.devices {
		d := l.devs[id]
		if d.settledTo.After(sp.start) {
			sp.truncated = true
		}
		d.spans = append(d.spans, sp)
	}
	l.spans[sp.s.ID] = sp
}

// Output is what one Settle call produced.
type Output struct {
	Records []Record
	Idle    []IdleShare
}

// Settle attributes every interval that can be attributed at time now and
// returns the records that became final and the idle shares found.
func (l *Ledger) Settle(now time.Time) Output {
	for _, id := range l.order {
		l.settleDevice(l.devs[id], now, false)
	}
	return l.collect(now, false)
}

// Close settles everything that is left, as at shutdown: every pending
// interval is attributed, and every ended span becomes a record.
// Spans still open are charged what they ran and flagged truncated.
func (l *Ledger) Close() Output {
	for _, id := range l.order {
		l.settleDevice(l.devs[id], time.Time{}, true)
	}
	return l.collect(time.Time{}, true)
}

func (l *Ledger) settleDevice(d *device, now time.Time, all bool) {
	horizon := now.Add(-l.p.SettleDelay)
	forced := now.Add(-l.p.History)
	if l.p.Weighting != WeightTime {
		// Token weights need the span's final counts: wait for open spans,
		// but no longer than the history kept.
		for _, sp := range d.spans {
			if !sp.ended && sp.start.Before(horizon) {
				horizon = sp.start
			}
		}
	}
	n := 0
	for _, iv := range d.pending {
		if !all && iv.End.After(horizon) && (l.p.History <= 0 || iv.End.After(forced)) {
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
	segs := l.scratch[:0]
	var sumW float64
	for _, sp := range d.spans {
		sp.weight = 0
		if sp.ended && !sp.s.Served {
			continue
		}
		a, b := max(sp.start.UnixNano(), t0), t1
		if sp.ended {
			b = min(sp.s.End.UnixNano(), t1)
		}
		if b <= a {
			continue
		}
		if !sp.ended && l.p.Weighting != WeightTime {
			// Only reached when the interval is older than the history:
			// the open span is not charged for it, and says so.
			sp.truncated = true
			continue
		}
		overlap := float64(b-a) / 1e9
		sp.overlap = overlap
		sp.weight = l.weight(sp, overlap)
		sumW += sp.weight
		segs = append(segs, segment{a, b})
	}
	covered := union(segs) / 1e9
	l.scratch = segs
	frac := 0.0
	if sumW > 0 && dt > 0 {
		frac = min(covered/dt, 1)
	}
	static := 0.0
	if d.id == HostDevice {
		static = l.p.StaticWatts * dt
	}
	total := share{
		joules:       iv.Joules,
		static:       static,
		depreciation: d.params.DepreciationPerSecond * dt,
		embodied:     d.params.EmbodiedGPerSecond * dt,
	}
	active := share{
		joules:       total.joules * frac,
		static:       total.static * frac,
		depreciation: total.depreciation * frac,
		embodied:     total.embodied * frac,
	}
	if sumW > 0 {
		bit := methodBits[iv.Method]
		for _, sp := range d.spans {
			if sp.weight == 0 {
				continue
			}
			k := sp.weight / sumW
			i := slices.Index(sp.devices, d.id)
			acc := &sp.acc[i]
			acc.joules += active.joules * k
			acc.static += active.static * k
			acc.depreciation += active.depreciation * k
			acc.embodied += active.embodied * k
			acc.methods |= bit
		}
	}
	if frac < 1 {
		l.idle = append(l.idle, IdleShare{
			Device:           d.id,
			Start:            iv.Start,
			End:              iv.End,
			Joules:           total.joules - active.joules,
			StaticJoules:     total.static - active.static,
			DepreciationCost: total.depreciation - active.depreciation,
			EmbodiedCO2eG:    total.embodied - active.embodied,
			Method:           iv.Method,
		})
	}
	d.settledTo = iv.End
	// Spans that ended by the end of this interval are done on this device.
	keep := d.spans[:0]
	for _, sp := range d.spans {
		if !sp.ended || sp.s.End.After(iv.End) {
			keep = append(keep, sp)
		}
	}
	clear(d.spans[len(keep):])
	d.spans = keep
}

// weight is a span's claim on an interval it overlaps for overlap seconds.
func (l *Ledger) weight(sp *span, overlap float64) float64 {
	if l.p.Weighting == WeightTime {
		return overlap
	}
	dur := sp.s.End.Sub(sp.start).Seconds()
	tokens := l.p.PromptTokenWeight*float64(max(sp.s.PromptTokens, 0)) + float64(max(sp.s.CompletionTokens, 0))
	if dur <= 0 || tokens <= 0 {
		// No token rate to go on: fall back to time, at a token's weight.
		return overlap
	}
	return overlap * tokens / dur
}

// union is the total length of a set of segments.
func union(segs []segment) float64 {
	if len(segs) == 0 {
		return 0
	}
	slices.SortFunc(segs, func(x, y segment) int { return cmp.Compare(x.a, y.a) })
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
	keep := l.waiting[:0]
	for _, sp := range l.waiting {
		if !all && !l.final(sp, now) {
			keep = append(keep, sp)
			continue
		}
		out.Records = append(out.Records, l.record(sp, now, all))
		delete(l.spans, sp.s.ID)
	}
	clear(l.waiting[len(keep):])
	l.waiting = keep
	if all {
		for _, sp := range l.spans {
			if !sp.ended {
				sp.truncated = true
			}
		}
	}
	slices.SortFunc(out.Records, func(a, b Record) int {
		if c := a.End.Compare(b.End); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	for i := range out.Records {
		out.Records[i].Time = l.uniqueTime(out.Records[i].End)
	}
	out.Idle, l.idle = l.idle, nil
	return out
}

func (l *Ledger) final(sp *span, now time.Time) bool {
	if !sp.s.Served {
		return true
	}
	if l.p.History > 0 && now.Sub(sp.s.End) > l.p.History {
		// A device stopped reporting: give up waiting, charge what was seen.
		for _, id := range sp.devices {
			if l.devs[id].settledTo.Before(sp.s.End) {
				sp.truncated = true
			}
		}
		return true
	}
	for _, id := range sp.devices {
		if l.devs[id].settledTo.Before(sp.s.End) {
			return false
		}
	}
	return true
}

func (l *Ledger) record(sp *span, now time.Time, all bool) Record {
	r := Record{
		Span:             sp.s,
		Node:             l.p.Node,
		Simulated:        l.p.Simulated,
		MethodVersion:    MethodVersion,
		ParamsHash:       l.hash,
		HistoryTruncated: sp.truncated,
	}
	if all && sp.s.Served {
		for _, id := range sp.devices {
			if l.devs[id].settledTo.Before(sp.s.End) {
				r.HistoryTruncated = true
			}
		}
	}
	var gpuMethods, hostMethods methodSet
	r.PerDevice = make([]DeviceShare, len(sp.devices))
	for i, id := range sp.devices {
		a := sp.acc[i]
		r.PerDevice[i] = DeviceShare{Device: id, Joules: a.joules, StaticJoules: a.static,
			DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied, Method: a.methods.method()}
		if id == HostDevice {
			r.HostEnergyJ += a.joules
			r.StaticEnergyJ += a.static
			hostMethods |= a.methods
		} else {
			r.GPUEnergyJ += a.joules
			gpuMethods |= a.methods
		}
		r.DepreciationCost += a.depreciation
		r.EmbodiedCO2eG += a.embodied
	}
	r.GPUMeter, r.HostMeter = gpuMethods.method(), hostMethods.method()
	r.ITEnergyJ = r.GPUEnergyJ + r.HostEnergyJ + r.StaticEnergyJ
	r.FacilityEnergyJ = r.ITEnergyJ * l.p.PUE
	itKWh, facKWh := r.ITEnergyJ/3.6e6, r.FacilityEnergyJ/3.6e6
	r.CO2eG = facKWh * l.p.CarbonGPerKWh
	r.WaterL = itKWh*l.p.WUEOnsiteLPerKWh + facKWh*l.p.WaterOffsiteLPerKWh
	r.EnergyCost = facKWh * l.p.PricePerKWh
	if m, ok := l.p.Models[sp.s.Model]; ok {
		r.TrainingCost = float64(sp.s.Tokens()) * m.TrainingCostPerToken
	}
	r.DeadLabourCost = r.DepreciationCost + r.EnergyCost + r.TrainingCost
	return r
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
