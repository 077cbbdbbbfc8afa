package requests

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/apierror"
	"github.com/deadlabour/deadlabour/internal/ticker"
)

// The event API: POST /v1/requests, for inference servers that cannot be
// put behind the proxy. A server reports its requests itself, as events:
//
//   - {"type":"begin", ...} when a request starts and {"type":"end", ...}
//     when it finishes: the request is charged, like a proxied one, for the
//     meter intervals that settle while it runs. This is the way to honest
//     figures.
//   - {"type":"span", ...} (the default type) for a request already
//     finished. It is charged only for the meter intervals not yet settled
//     (attribution.settle_delay, default 500 ms): a span of a longer request
//     is charged its last half second or so and recorded history_truncated.
//     The answer says so in a warning.
//
// The body is one event object or an array of them, strict JSON (unknown
// fields, trailing data and wrong types are refused), at most MaxBodyBytes.
// A batch is taken whole or not at all. Every refusal is a 4xx whose error
// names the field at fault in "param", e.g. "[3].start".

// EventSink receives what the event API accepts (cmd's span queue): the
// Recorder of the proxies, begun and ended requests alike (Begin carries
// id, upstream, model, tenant, start and devices), and whole requests never
// begun.
type EventSink interface {
	Recorder
	Submit(span estimator.Span) // a whole request never begun
}

// Defaults of EventOptions.
const (
	DefaultMaxEventBytes = 1 << 20
	DefaultMaxEvents     = 1000
	DefaultMaxOpen       = 10000
	// futureSlack is how far past the daemon's clock a timestamp may lie
	// (clock steps between processes on one node).
	futureSlack = time.Second
	maxUpstream = 64
)

// EventOptions configure the event API.
type EventOptions struct {
	// History is how far back a timestamp may lie: the interval history the
	// estimator keeps (attribution.history). Required. A request begun and
	// not ended for this long is ended by the API with status abandoned.
	History time.Duration
	// SettleDelay is attribution.settle_delay: spans that start further
	// back than this are answered with a warning.
	SettleDelay time.Duration
	// TenantSecret is the per-node HMAC key (at least 16 bytes) under
	// which an event's tenant is hashed, unless TenantRaw keeps it as it
	// is (config admin.event_tenant_raw). Required.
	TenantSecret []byte
	TenantRaw    bool
	// Devices maps an event's upstream and gpus to device ids; an error
	// refuses the event, naming its gpus field. Required.
	Devices func(upstream string, gpus []string) ([]string, error)
	// MaxBodyBytes caps a request body (default DefaultMaxEventBytes),
	// MaxEvents a batch (default DefaultMaxEvents), MaxOpen the requests
	// begun and not yet ended (default DefaultMaxOpen).
	MaxBodyBytes int64
	MaxEvents    int
	MaxOpen      int
	Now          func() time.Time
	Logger       *slog.Logger
}

// Events is the handler of POST /v1/requests. Run must run for begun
// requests to be ended when they are abandoned.
type Events struct {
	opts    EventOptions
	sink    EventSink
	tenants tenants

	mu     sync.Mutex
	open   map[string]openSpan
	recent map[string]time.Time // ids ended, for duplicates
	order  []recentID           // recent in the order ended, for pruning

	// abandoned logs requests given up as abandoned: a warning at the
	// first, debug lines for the next, and a summary with their count once
	// none has been abandoned for the history (its quiet period).
	abandoned *episode
}

type openSpan struct {
	upstream, model, tenant string
	start                   time.Time
	devices                 []string
}

type recentID struct {
	id string
	at time.Time
}

// NewEvents makes the event API, reporting to sink.
func NewEvents(opts EventOptions, sink EventSink) (*Events, error) {
	if sink == nil || opts.Devices == nil {
		return nil, errors.New("requests: event API needs a sink and a device map")
	}
	if opts.History <= 0 {
		return nil, errors.New("requests: event API needs the history kept (attribution.history)")
	}
	if len(opts.TenantSecret) < 16 {
		return nil, fmt.Errorf("requests: event API: tenant secret has %d bytes, want at least 16", len(opts.TenantSecret))
	}
	opts.MaxBodyBytes = cmpOr(opts.MaxBodyBytes, DefaultMaxEventBytes)
	opts.MaxEvents = cmpOr(opts.MaxEvents, DefaultMaxEvents)
	opts.MaxOpen = cmpOr(opts.MaxOpen, DefaultMaxOpen)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Events{opts: opts, sink: sink, tenants: tenants{raw: opts.TenantRaw, secret: slices.Clone(opts.TenantSecret)},
		open: map[string]openSpan{}, recent: map[string]time.Time{},
		abandoned: &episode{log: opts.Logger, quiet: opts.History, warn: "event API: a request was begun and never ended; it is recorded as abandoned",
			recovered: "event API: no request abandoned for attribution.history"}}, nil
}

// eventsAnswer is the answer to an accepted body.
type eventsAnswer struct {
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Warnings   []string `json:"warnings,omitempty"`
}

// ServeHTTP takes one body of events.
func (e *Events) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.fail(w, refuse(http.StatusMethodNotAllowed, "", "use POST"))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		e.fail(w, refuse(http.StatusUnsupportedMediaType, "Content-Type", "want application/json"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, e.opts.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			e.fail(w, refuse(http.StatusRequestEntityTooLarge, "", "body is larger than the limit of %d bytes: send smaller batches", e.opts.MaxBodyBytes))
			return
		}
		e.fail(w, refuse(http.StatusBadRequest, "", "cannot read the body"))
		return
	}
	now := e.opts.Now()
	events, batch, ferr := decodeEvents(body, now, e.opts.History, e.opts.MaxEvents)
	var ans eventsAnswer
	if ferr == nil {
		ans, ferr = e.apply(events, now, batch)
	}
	if ferr != nil {
		e.fail(w, ferr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(ans)
}

func (e *Events) fail(w http.ResponseWriter, f *fieldError) {
	e.opts.Logger.Debug("event API refused a body", "status", f.status, "param", f.field, "reason", f.msg)
	apierror.WriteParam(w, f.status, "invalid_request_error", f.field, f.Error())
}

// apply takes a checked batch whole, or refuses it whole.
func (e *Events) apply(events []event, now time.Time, batch bool) (eventsAnswer, *fieldError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.prune(now)
	name := func(i int, f string) string { return eventPrefix(batch, i) + f }
	// Plan against a view of the state as the batch changes it.
	type action int
	const (
		doBegin action = iota
		doEnd
		doSubmit
		doSkip
	)
	opened := map[string]openSpan{}
	closed := map[string]bool{}
	acts := make([]action, len(events))
	var ans eventsAnswer
	isOpen := func(id string) (openSpan, bool) {
		if closed[id] {
			return openSpan{}, false
		}
		if o, ok := opened[id]; ok {
			return o, true
		}
		o, ok := e.open[id]
		return o, ok
	}
	for i := range events {
		ev := &events[i]
		id := ev.span.ID
		if ev.span.Tenant != "" {
			ev.span.Tenant = e.tenants.named(ev.span.Tenant)
		}
		o, open := isOpen(id)
		_, seen := e.recent[id]
		seen = seen || closed[id]
		switch ev.kind {
		case "begin":
			switch {
			case open:
				return ans, refuse(http.StatusConflict, name(i, "id"), "%q is already begun", id)
			case seen:
				return ans, refuse(http.StatusConflict, name(i, "id"), "%q has already ended", id)
			case len(e.open)+len(opened) >= e.opts.MaxOpen:
				return ans, refuse(http.StatusTooManyRequests, name(i, "id"), "%d requests are begun and not ended: end some first", e.opts.MaxOpen)
			}
			opened[id] = openSpan{upstream: ev.span.Upstream, model: ev.span.Model, tenant: ev.span.Tenant,
				start: ev.span.Start, devices: ev.span.Devices}
			acts[i] = doBegin
		case "end":
			switch {
			case open && o.upstream != ev.span.Upstream:
				return ans, refuse(http.StatusUnprocessableEntity, name(i, "upstream"), "%q was begun on upstream %q", id, o.upstream)
			case open && ev.hasStart && !ev.span.Start.Equal(o.start):
				return ans, refuse(http.StatusUnprocessableEntity, name(i, "start"), "differs from the begin event's %s", o.start.Format(time.RFC3339Nano))
			case open && ev.span.End.Before(o.start):
				return ans, refuse(http.StatusUnprocessableEntity, name(i, "end"), "before the begin event's start")
			case open:
				ev.span.Start, ev.span.Devices = o.start, o.devices
				ev.span.Model, ev.span.Tenant = cmp.Or(ev.span.Model, o.model), cmp.Or(ev.span.Tenant, o.tenant)
				if !ev.span.FirstToken.IsZero() && ev.span.FirstToken.Before(o.start) {
					return ans, refuse(http.StatusUnprocessableEntity, name(i, "first_token"), "before the begin event's start")
				}
				acts[i] = doEnd
			case seen:
				acts[i] = doSkip
			case !ev.hasStart:
				return ans, refuse(http.StatusUnprocessableEntity, name(i, "start"), "required: no request %q is begun (was the daemon restarted?)", id)
			default:
				acts[i] = doSubmit
			}
			closed[id] = true
		case "span":
			switch {
			case open:
				return ans, refuse(http.StatusConflict, name(i, "id"), "%q is begun: finish it with an end event", id)
			case seen:
				acts[i] = doSkip
			default:
				acts[i] = doSubmit
			}
			closed[id] = true
		}
		if acts[i] == doBegin || acts[i] == doSubmit {
			devices, err := e.opts.Devices(ev.span.Upstream, ev.gpus)
			if err != nil {
				return ans, refuse(http.StatusUnprocessableEntity, name(i, "gpus"), "%v", err)
			}
			// Two names of one GPU (its index and its UUID) charge it once.
			devices = uniq(devices)
			ev.span.Devices = devices
			if acts[i] == doBegin {
				o := opened[id]
				o.devices = devices
				opened[id] = o
			}
		}
		if acts[i] == doSubmit && now.Sub(ev.span.Start) > e.opts.SettleDelay {
			ans.Warnings = append(ans.Warnings, name(i, "start")+": the request began "+now.Sub(ev.span.Start).Round(time.Millisecond).String()+
				" ago, more than attribution.settle_delay: it is charged only for the meter intervals not yet settled and recorded history_truncated;"+
				" send a begin event when a request starts for its full share")
		}
	}
	for i, ev := range events {
		s := ev.span
		switch acts[i] {
		case doBegin:
			e.open[s.ID] = opened[s.ID]
			e.sink.Begin(s)
		case doEnd:
			delete(e.open, s.ID)
			e.remember(s.ID, now)
			e.sink.End(s)
		case doSubmit:
			e.remember(s.ID, now)
			e.sink.Submit(s)
		case doSkip:
			ans.Duplicates++
			continue
		}
		ans.Accepted++
	}
	return ans, nil
}

// EndedID is a request id the event API has ended, with when.
type EndedID struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// Ended lists the ids an event for which is answered as a duplicate: those
// ended within the history, and those still begun, which the ledger
// records as abandoned when the daemon stops. Called once no event can
// arrive any more (the daemon stopping), it is what the next process needs
// from this one (RestoreEnded), so that an end posted across a restart is
// not recorded a second time.
func (e *Events) Ended() []EndedID {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	out := make([]EndedID, 0, len(e.recent)+len(e.open))
	for _, r := range e.order {
		if e.recent[r.id].Equal(r.at) {
			out = append(out, EndedID{ID: r.id, At: r.at})
		}
	}
	ids := make([]string, 0, len(e.open))
	for id := range e.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out = append(out, EndedID{ID: id, At: now})
	}
	return out
}

// RestoreEnded remembers the ids an earlier process ended (its Ended),
// those within the history.
func (e *Events) RestoreEnded(ids []EndedID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	for _, r := range ids {
		if r.ID != "" && now.Sub(r.At) <= e.opts.History {
			e.remember(r.ID, r.At)
		}
	}
}

// remember keeps an ended id for the history, to answer a retried event as
// a duplicate instead of recording the request twice.
func (e *Events) remember(id string, now time.Time) {
	e.recent[id] = now
	e.order = append(e.order, recentID{id, now})
}

// prune forgets ended ids older than the history, and the oldest ones past
// a bound on memory.
func (e *Events) prune(now time.Time) {
	n := 0
	for n < len(e.order) && (now.Sub(e.order[n].at) > e.opts.History || len(e.order)-n > 16*e.opts.MaxOpen) {
		if e.recent[e.order[n].id].Equal(e.order[n].at) {
			delete(e.recent, e.order[n].id)
		}
		n++
	}
	if n > 0 {
		e.order = append(e.order[:0], e.order[n:]...)
	}
}

// Run ends requests begun and not ended within the history, once a second,
// until ctx is done.
func (e *Events) Run(ctx context.Context) {
	ticker.Every(ctx, time.Second, func() { e.Expire(e.opts.Now()) })
}

// Expire ends, with status abandoned, every request begun longer than the
// history ago and not ended: it has been charged until now, and no more.
// The first is logged at warn, the next at debug, and their count once
// none has been abandoned for the history.
func (e *Events) Expire(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.abandoned.ok(now)
	for id, o := range e.open {
		if now.Sub(o.start) <= e.opts.History {
			continue
		}
		delete(e.open, id)
		e.remember(id, now)
		e.abandoned.fail(now, "request_id", id, "upstream", o.upstream, "begun", o.start)
		e.sink.End(estimator.Span{ID: id, Upstream: o.upstream, Model: o.model, Tenant: o.tenant, Start: o.start, End: now, Status: estimator.StatusAbandoned,
			PromptTokens: -1, CompletionTokens: -1, CachedTokens: -1, ReasoningTokens: -1,
			UsageSource: estimator.UsageUnknown, Devices: o.devices, Served: true})
	}
}

// Open is how many requests are begun and not ended (metrics, tests).
func (e *Events) Open() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.open)
}

// uniq is ids without repeats, in their order.
func uniq(ids []string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}
