package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// auditStore keeps the most recent records and, per device, how the
// intervals of the last window were split, so that a recent record can be
// shown and recomputed (GET /v1/requests/{id}?explain=1, deadlabourd
// audit). The engine writes, HTTP handlers read. Memory is bounded: at most
// maxRecords records, and the settlements of window per device.
type auditStore struct {
	params     estimator.Params
	sources    []paramSource
	maxRecords int
	window     time.Duration
	schema     schema.RequestSchema // the engine's: records are shown as written

	mu sync.Mutex
	// records keeps, per request id, every record kept with that id in the
	// order they were recorded: two records may share an id (two proxied
	// requests that brought the same X-Request-Id, an event-API request
	// recorded again after a restart).
	records map[string]*fifo[estimator.Record]
	order   fifo[string] // one id per record kept, oldest record first
	settled map[string]*settleLog
}

func newAuditStore(p estimator.Params, sources []paramSource, maxRecords int, window time.Duration) *auditStore {
	return &auditStore{params: p, sources: sources, maxRecords: maxRecords, window: window,
		records: map[string]*fifo[estimator.Record]{}, settled: map[string]*settleLog{}}
}

// addRecord keeps r, forgetting the oldest records beyond maxRecords. Its
// cost does not grow with the records kept per id: a client that sends
// one X-Request-Id with every request evicts in O(1) amortised, as one
// that never repeats an id does.
func (s *auditStore) addRecord(r estimator.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.records[r.ID]
	if q == nil {
		q = &fifo[estimator.Record]{}
		s.records[r.ID] = q
	}
	q.push(r)
	s.order.push(r.ID)
	for s.order.len() > s.maxRecords {
		// The oldest record of the oldest id in order is the oldest
		// record kept: each id's records are in the order they were added.
		id := s.order.front()
		s.order.pop()
		if q := s.records[id]; q.len() > 1 {
			q.pop()
		} else {
			delete(s.records, id)
		}
	}
}

// fifo is a first-in, first-out list whose pop is O(1) amortised: a pop
// moves the head on, and the live items are moved to the array's front
// only once the popped slots outnumber them, so that no item is moved more
// often than items are popped, and the array holds at most twice the live
// items (or compactAfter more), with append's spare capacity beyond.
type fifo[T any] struct {
	items []T
	head  int
	moved int // items moved by compaction, in all (the tests read it)
}

// compactAfter is the fewest popped slots a fifo compacts: small lists
// are left alone.
const compactAfter = 64

func (q *fifo[T]) push(v T)  { q.items = append(q.items, v) }
func (q *fifo[T]) len() int  { return len(q.items) - q.head }
func (q *fifo[T]) front() T  { return q.items[q.head] }
func (q *fifo[T]) live() []T { return q.items[q.head:] }

// pop forgets the oldest item. The list must not be empty.
func (q *fifo[T]) pop() {
	var zero T
	q.items[q.head] = zero // let what it holds go
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > compactAfter && q.head > len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.moved += n
		q.items, q.head = q.items[:n], 0
	}
}

// addSettled keeps how intervals were split, forgetting those older than window.
func (s *auditStore) addSettled(sts []estimator.Settlement) {
	if len(sts) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range sts {
		lg := s.settled[st.Device]
		if lg == nil {
			lg = &settleLog{}
			s.settled[st.Device] = lg
		}
		lg.add(st, s.window)
	}
}

// keptRecord is a record and the settlements that may have charged it.
type keptRecord struct {
	rec     estimator.Record
	settled map[string][]estimator.Settlement
}

// lookup returns the newest limit records kept with id, oldest first, and
// how many are kept with id in all.
func (s *auditStore) lookup(id string, limit int) (kept []keptRecord, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.records[id]
	if q == nil {
		return nil, 0
	}
	rs := q.live()
	total = len(rs)
	if len(rs) > limit {
		rs = rs[len(rs)-limit:]
	}
	for _, r := range rs {
		settled := map[string][]estimator.Settlement{}
		for _, ds := range r.PerDevice {
			from, to := r.Start, r.End
			if !ds.ChargedTo.IsZero() && ds.ChargedTo.After(to) {
				to = ds.ChargedTo
			}
			if lg := s.settled[ds.Device]; lg != nil {
				settled[ds.Device] = lg.between(from, to, ds.Device)
			}
		}
		kept = append(kept, keptRecord{rec: r, settled: settled})
	}
	return kept, total
}

// settleLog is one device's settlements in time order, compact.
type settleLog struct {
	entries fifo[compactSettlement]
}

type compactSettlement struct {
	start, end                                              int64
	joules, covered, sumWeight, prompt, decode, fixed, sumO float64
	alpha                                                   float64 // tokens weighting's prompt token weight
	method, coef, alphaSrc                                  uint8
	byOverlap                                               bool
}

// methodCodes and coefficientSources (of the marginal coefficients and of
// the prompt token weight) are the values a compactSettlement stores by
// index; returned by value, so nothing can change them.
func methodCodes() [6]estimator.Method {
	return [...]estimator.Method{estimator.MethodCounter, estimator.MethodPowerIntegral, estimator.MethodModelled,
		estimator.MethodStatic, estimator.MethodMixed, estimator.MethodNone}
}

func coefficientSources() [6]string {
	return [...]string{"", "configured", "fitted", "warming", "host", "default"}
}

func indexOf[T comparable](list []T, v T) uint8 {
	for i, x := range list {
		if x == v {
			return uint8(i)
		}
	}
	return 0
}

func (lg *settleLog) add(st estimator.Settlement, window time.Duration) {
	methods, coefs := methodCodes(), coefficientSources()
	lg.entries.push(compactSettlement{
		start: st.Start.UnixNano(), end: st.End.UnixNano(), joules: st.Joules, covered: st.Covered,
		sumWeight: st.SumWeight, prompt: st.PromptJPerToken, decode: st.DecodeJPerToken, fixed: st.FixedJ,
		sumO: st.SumOverlapS, method: indexOf(methods[:], st.Method), coef: indexOf(coefs[:], st.Coefficients),
		alpha: st.PromptTokenWeight, alphaSrc: indexOf(coefs[:], st.TokenWeight), byOverlap: st.ByOverlap,
	})
	horizon := st.End.UnixNano() - int64(window)
	for lg.entries.len() > 0 && lg.entries.front().end < horizon {
		lg.entries.pop()
	}
}

// between returns the settlements of intervals that overlap [from, to].
func (lg *settleLog) between(from, to time.Time, device string) []estimator.Settlement {
	live := lg.entries.live()
	a, b := from.UnixNano(), to.UnixNano()
	i := sort.Search(len(live), func(i int) bool { return live[i].end > a })
	var out []estimator.Settlement
	methods, coefs := methodCodes(), coefficientSources()
	for ; i < len(live) && live[i].start < b; i++ {
		c := live[i]
		out = append(out, estimator.Settlement{
			Interval: estimator.Interval{Device: device, Start: time.Unix(0, c.start), End: time.Unix(0, c.end),
				Joules: c.joules, Method: methods[c.method]},
			Covered: c.covered, SumWeight: c.sumWeight, ByOverlap: c.byOverlap,
			PromptJPerToken: c.prompt, DecodeJPerToken: c.decode, Coefficients: coefs[c.coef],
			FixedJ: c.fixed, SumOverlapS: c.sumO, PromptTokenWeight: c.alpha, TokenWeight: coefs[c.alphaSrc],
		})
	}
	return out
}

// requestPattern is the route of GET /v1/requests/{id}. The id is the rest
// of the path: request ids may hold '/' (X-Request-Id, the event API), sent
// as they are or escaped (%2F).
const requestPattern = "GET /v1/requests/{id...}"

// requestRoutes registers GET /v1/requests/{id} on the admin listener.
func (d *daemon) requestRoutes(mux *http.ServeMux) {
	mux.HandleFunc(requestPattern, d.audit.serveRequest)
}

// requestPath is the path of the record of id on the admin listener, with
// the id escaped as one segment (a '/' in it as %2F), so that the router
// never cleans it ("a//b", "a/../b").
func requestPath(id string) (path, rawPath string) {
	return "/v1/requests/" + id, "/v1/requests/" + url.PathEscape(id)
}

// auditShowMax is the most records of one id that one answer shows (and
// its default): each may carry an explanation, and a client that sends
// one X-Request-Id with every request may have attribution.audit_records
// of them kept. ?limit=N asks for fewer.
const auditShowMax = 100

// serveRequest answers GET /v1/requests/{id}: the record as written to
// InfluxDB (tags, fields, time), and with ?explain=1 how it was made. Of
// several records of the id, the newest ?limit (at most auditShowMax).
func (s *auditStore) serveRequest(w http.ResponseWriter, r *http.Request) {
	if s == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "the audit store is off (attribution.audit_records: 0)"})
		return
	}
	limit := auditShowMax
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > auditShowMax {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": fmt.Sprintf(
				"limit=%q: want a whole number of records from 1 to %d", v, auditShowMax)})
			return
		}
		limit = n
	}
	id := r.PathValue("id")
	kept, total := s.lookup(id, limit)
	if len(kept) == 0 {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": fmt.Sprintf(
			"request %q is not among the %d most recent records kept (attribution.audit_records); InfluxDB has every record", id, s.maxRecords)})
		return
	}
	explain := r.URL.Query().Get("explain")
	withExplain := explain != "" && explain != "0" && explain != "false"
	answers := make([]map[string]any, len(kept))
	for i, k := range kept {
		out, err := s.recordJSON(k.rec)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		answers[i] = map[string]any{"record": out}
		if withExplain {
			answers[i]["explain"] = s.explain(k.rec, k.settled)
		}
	}
	if total == 1 {
		answers[0]["same_id_records"] = 1
		writeJSON(w, http.StatusOK, answers[0])
		return
	}
	// Several records share the id: those shown, never one in their name.
	note := sameIDNote
	if len(answers) < total {
		note += fmt.Sprintf("; the newest %d of the %d kept are shown (?limit=, at most %d)", len(answers), total, auditShowMax)
	}
	writeJSON(w, http.StatusOK, map[string]any{"request_id": id, "same_id_records": total, "records_shown": len(answers),
		"note": note, "records": answers})
}

// sameIDNote is the note of an answer listing several records of one id.
const sameIDNote = "several records share this request id (two requests sent with the same X-Request-Id, " +
	"or an event-API request recorded again after a restart): each is a separate record in InfluxDB, listed oldest first; " +
	"their time (the InfluxDB point's timestamp) tells them apart"

// recordJSON is a record as the InfluxDB point has it, in schema order.
func (s *auditStore) recordJSON(r estimator.Record) (orderedJSON, error) {
	p, err := s.schema.Point(r)
	if err != nil {
		return nil, err
	}
	out := orderedJSON{{Key: "measurement", Value: p.Measurement}, {Key: "time", Value: p.Time.UTC().Format(time.RFC3339Nano)}}
	for _, t := range p.Tags {
		out = append(out, schema.Field{Key: t.Key, Value: t.Value})
	}
	return append(out, p.Fields...), nil
}

// orderedJSON is a JSON object whose keys keep their order.
type orderedJSON []schema.Field

func (o orderedJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Key)
		v, err := json.Marshal(f.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object, keeping its keys' order.
func (o *orderedJSON) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %.40q", b)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		*o = append(*o, schema.Field{Key: fmt.Sprint(k), Value: v})
	}
	return nil
}

// explanation is the JSON of ?explain=1.
type explanation struct {
	MethodVersion string          `json:"method_version"`
	ParamsHash    string          `json:"params_hash"`
	Weighting     string          `json:"weighting"`
	Parameters    []paramSource   `json:"parameters"`
	Devices       []deviceExplain `json:"devices"`
	Recomputed    orderedJSON     `json:"recomputed"`
	Matches       bool            `json:"matches"`
	MaxRelDiff    float64         `json:"max_rel_diff"`
	Note          string          `json:"note,omitempty"`
}

type deviceExplain struct {
	Device       string          `json:"device"`
	Joules       float64         `json:"joules"`
	StaticJoules float64         `json:"static_joules,omitempty"`
	Depreciation float64         `json:"depreciation_cost"`
	EmbodiedG    float64         `json:"embodied_co2e_g"`
	Meter        string          `json:"meter"`
	ChargedFrom  string          `json:"charged_from,omitempty"`
	ChargedTo    string          `json:"charged_to,omitempty"`
	KeptFrom     string          `json:"intervals_kept_from,omitempty"`
	Window       windowExplain   `json:"idle_window"`
	Intervals    []chargeExplain `json:"intervals"`
}

type windowExplain struct {
	Start        string  `json:"start"`
	End          string  `json:"end"`
	IdleJ        float64 `json:"idle_j"`
	ActiveJ      float64 `json:"active_j"`
	IdleS        float64 `json:"idle_s"`
	ActiveS      float64 `json:"active_s"`
	EnergyUplift float64 `json:"energy_uplift"`
	WearUplift   float64 `json:"wear_uplift"`
}

type chargeExplain struct {
	Start        string  `json:"start"`
	End          string  `json:"end"`
	Joules       float64 `json:"interval_j"`
	Meter        string  `json:"meter"`
	Covered      float64 `json:"covered"`
	SumWeight    float64 `json:"sum_weight"`
	Coefficients string  `json:"coefficients,omitempty"`
	PromptJ      float64 `json:"prompt_j_per_token,omitempty"`
	DecodeJ      float64 `json:"decode_j_per_token,omitempty"`
	FixedJ       float64 `json:"fixed_j,omitempty"`
	// Tokens weighting: the prompt token weight and where it came from
	// (configured, fitted, default; host: the fallback, never fitted).
	PromptWeight       float64 `json:"prompt_token_weight,omitempty"`
	PromptWeightSource string  `json:"prompt_token_weight_source,omitempty"`
	OverlapS           float64 `json:"overlap_s"`
	PromptTokens       float64 `json:"prompt_tokens,omitempty"`
	DecodeTokens       float64 `json:"completion_tokens,omitempty"`
	Weight             float64 `json:"weight"`
	Share              float64 `json:"share"`
	Charged            float64 `json:"charged_j"`
	Static             float64 `json:"charged_static_j,omitempty"`
	Carbon             float64 `json:"carbon_g_per_kwh"`
	CarbonMarket       float64 `json:"carbon_market_g_per_kwh,omitempty"`
	Price              float64 `json:"price_per_kwh"`
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func (s *auditStore) explain(rec estimator.Record, settled map[string][]estimator.Settlement) explanation {
	ex := estimator.Explain(s.params, rec, settled)
	out := explanation{MethodVersion: rec.MethodVersion, ParamsHash: rec.ParamsHash, Weighting: ex.Weighting,
		Parameters: s.sources, Matches: ex.Matches, MaxRelDiff: ex.MaxRelDiff}
	if rec.ParamsHash != s.params.Hash() {
		out.Note = "the record was made under other parameters (params_hash differs): the recomputation uses the current ones"
	} else if !ex.Matches {
		out.Note = fmt.Sprintf("some intervals the record was charged for are no longer kept (attribution.audit_window %s)", s.window)
	}
	out.Recomputed, _ = s.recordJSON(ex.Recomputed)
	for i, trail := range ex.Devices {
		ds := rec.PerDevice[i]
		de := deviceExplain{Device: ds.Device, Joules: ds.Joules, StaticJoules: ds.StaticJoules, Depreciation: ds.DepreciationCost,
			EmbodiedG: ds.EmbodiedCO2eG, Meter: string(ds.Method), ChargedFrom: stamp(ds.ChargedFrom), ChargedTo: stamp(ds.ChargedTo),
			KeptFrom: stamp(trail.KeptFrom),
			Window: windowExplain{Start: stamp(ds.Window.Start), End: stamp(ds.Window.End), IdleJ: ds.Window.IdleJ, ActiveJ: ds.Window.ActiveJ,
				IdleS: ds.Window.IdleS, ActiveS: ds.Window.ActiveS, EnergyUplift: ds.EnergyUplift, WearUplift: ds.WearUplift}}
		for _, c := range trail.Intervals {
			de.Intervals = append(de.Intervals, chargeExplain{Start: stamp(c.Start), End: stamp(c.End), Joules: c.Settlement.Joules,
				Meter: string(c.Method), Covered: c.Covered, SumWeight: c.SumWeight, Coefficients: c.Coefficients,
				PromptJ: c.PromptJPerToken, DecodeJ: c.DecodeJPerToken, FixedJ: c.FixedJ, OverlapS: c.OverlapS,
				PromptWeight: c.PromptTokenWeight, PromptWeightSource: c.TokenWeight,
				PromptTokens: c.PromptTokens, DecodeTokens: c.DecodeTokens, Weight: c.Weight, Share: c.Share,
				Charged: c.Joules, Static: c.StaticJoules, Carbon: c.CarbonGPerKWh, CarbonMarket: c.CarbonMarketGPerKWh, Price: c.PricePerKWh})
		}
		out.Devices = append(out.Devices, de)
	}
	return out
}

// cmdAudit fetches a recent record's explanation from the running daemon's
// admin listener and prints it.
func cmdAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file (for admin.listen and admin.token_file)")
	admin := fs.String("admin", "", "admin listener host:port (default: admin.listen from --config)")
	asJSON := fs.Bool("json", false, "print the daemon's JSON answer as it is")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the daemon")
	limit := fs.Int("limit", auditShowMax, fmt.Sprintf("of several records of the id, show the newest LIMIT (1 to %d)", auditShowMax))
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: deadlabourd audit [--config FILE | --admin HOST:PORT] [--json] [--limit N] REQUEST_ID")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one REQUEST_ID, got %d arguments", errUsage, fs.NArg())
	}
	if *limit < 1 || *limit > auditShowMax {
		return fmt.Errorf("%w: --limit %d: want 1 to %d", errUsage, *limit, auditShowMax)
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	addr, token := *admin, ""
	if addr == "" || explicit {
		// The config says where the admin listener is and its token.
		cfg, err := config.Load(*cfgPath, -1)
		if err != nil {
			return fmt.Errorf("%w (or name the admin listener with --admin)", err)
		}
		if addr == "" {
			addr = cfg.Admin.Listen
		}
		if token, err = configAdminToken(cfg); err != nil {
			return err
		}
	}
	if addr == "" {
		return errors.New("the admin listener is off (admin.listen is empty): the daemon cannot be asked")
	}
	hostport, err := adminDialAddr(addr)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	u := url.URL{Scheme: "http", Host: hostport, RawQuery: "explain=1"}
	if *limit != auditShowMax {
		u.RawQuery += "&limit=" + strconv.Itoa(*limit)
	}
	u.Path, u.RawPath = requestPath(fs.Arg(0))
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is deadlabourd running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	type answer struct {
		Record  map[string]any `json:"record"`
		Explain explanation    `json:"explain"`
	}
	var got struct {
		answer
		SameID  int      `json:"same_id_records"`
		Records []answer `json:"records"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("the daemon's answer: %w", err)
	}
	if len(got.Records) == 0 {
		printAudit(stdout, got.Record, got.Explain)
		return nil
	}
	fmt.Fprintf(stdout, "%d records share request id %s (the same X-Request-Id sent twice, or recorded again after a restart); each is its own record in InfluxDB, told apart by time.",
		got.SameID, fs.Arg(0))
	if len(got.Records) < got.SameID {
		fmt.Fprintf(stdout, " Showing the newest %d (--limit, at most %d).", len(got.Records), auditShowMax)
	}
	fmt.Fprintln(stdout, " Oldest first:")
	first := got.SameID - len(got.Records) // records not shown, older than those shown
	for i, a := range got.Records {
		fmt.Fprintf(stdout, "\n=== record %d of %d, time %v ===\n", first+i+1, got.SameID, a.Record["time"])
		printAudit(stdout, a.Record, a.Explain)
	}
	return nil
}

func printAudit(w io.Writer, rec map[string]any, ex explanation) {
	f := func(k string) string {
		v, ok := rec[k]
		if !ok {
			return "-"
		}
		if x, ok := v.(float64); ok {
			return fmt.Sprintf("%.6g", x)
		}
		return fmt.Sprint(v)
	}
	fmt.Fprintf(w, "request %s: model %s, upstream %s, tenant %s, status %s, at %s\n", f("request_id"), f("model"), f("upstream"), f("tenant"), f("status"), f("time"))
	fmt.Fprintf(w, "  %s s, %s prompt + %s completion tokens (%s); GPUs %s; served %s; simulated %s; history truncated %s\n",
		f("duration_s"), f("prompt_tokens"), f("completion_tokens"), f("usage_source"), f("gpus"), f("served"), f("simulated"), f("history_truncated"))
	fmt.Fprintf(w, "  method version %s, parameters %s, weighting %s; meters: GPU %s, host %s\n",
		ex.MethodVersion, ex.ParamsHash, ex.Weighting, f("gpu_meter"), f("host_meter"))
	fmt.Fprintf(w, "energy (J): GPU %s + host %s + static %s = IT %s; facility %s\n",
		f("gpu_energy_j"), f("host_energy_j"), f("static_energy_j"), f("it_energy_j"), f("facility_energy_j"))
	fmt.Fprintf(w, "carbon (g): operational %s, market-based %s, embodied %s, training %s; water (L): %s on-site + %s off-site\n",
		f("co2e_g"), f("co2e_market_g"), f("embodied_co2e_g"), f("training_co2e_g"), f("water_onsite_l"), f("water_offsite_l"))
	fmt.Fprintf(w, "money: energy %s + depreciation %s + training %s = dead labour %s; living labour %s s\n",
		f("energy_cost"), f("depreciation_cost"), f("training_cost"), f("dead_labour_cost"), f("living_labour_s"))
	fmt.Fprintf(w, "loaded (with the idle share, uplift %s): GPU %s J, IT %s J, facility %s J, CO2e %s g, depreciation %s, dead labour %s\n",
		f("idle_uplift"), f("loaded_gpu_energy_j"), f("loaded_it_energy_j"), f("loaded_facility_energy_j"), f("loaded_co2e_g"),
		f("loaded_depreciation_cost"), f("loaded_dead_labour_cost"))
	for _, d := range ex.Devices {
		fmt.Fprintf(w, "\ndevice %s: %.6g J", d.Device, d.Joules)
		if d.StaticJoules > 0 {
			fmt.Fprintf(w, " + %.6g J static", d.StaticJoules)
		}
		fmt.Fprintf(w, ", depreciation %.6g, embodied %.6g g, meter %s", d.Depreciation, d.EmbodiedG, d.Meter)
		if d.ChargedFrom != "" {
			fmt.Fprintf(w, ", charged from %s", d.ChargedFrom)
		}
		if d.ChargedTo != "" {
			fmt.Fprintf(w, ", charged to %s", d.ChargedTo)
		}
		fmt.Fprintf(w, "\n  idle window %s to %s: %.6g J idle / %.6g J active (uplift %.4g), %.6g s / %.6g s (wear uplift %.4g)\n",
			d.Window.Start, d.Window.End, d.Window.IdleJ, d.Window.ActiveJ, d.Window.EnergyUplift, d.Window.IdleS, d.Window.ActiveS, d.Window.WearUplift)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		tokens := ex.Weighting == estimator.WeightTokens
		head := "  START\tEND\tINTERVAL J\tMETER\tCOVERED\tOVERLAP S\tWEIGHT\tSUM WEIGHTS\tSHARE\tCHARGED J\tgCO2e/kWh\tPRICE/kWh\t"
		if tokens {
			head += "PROMPT WEIGHT\t"
		}
		fmt.Fprintln(tw, head)
		for _, c := range d.Intervals {
			fmt.Fprintf(tw, "  %s\t%s\t%.6g\t%s\t%.4g\t%.4g\t%.6g\t%.6g\t%.4g\t%.6g\t%.4g\t%.4g\t", clockOf(c.Start), clockOf(c.End),
				c.Joules, c.Meter, c.Covered, c.OverlapS, c.Weight, c.SumWeight, c.Share, c.Charged, c.Carbon, c.Price)
			if tokens {
				fmt.Fprintf(tw, "%.4g %s\t", c.PromptWeight, c.PromptWeightSource)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nrecomputed from the intervals above: GPU %v J, host %v J, static %v J, depreciation %v\n",
		get(ex.Recomputed, "gpu_energy_j"), get(ex.Recomputed, "host_energy_j"), get(ex.Recomputed, "static_energy_j"), get(ex.Recomputed, "depreciation_cost"))
	if ex.Matches {
		fmt.Fprintf(w, "matches the record (largest relative difference %.3g)\n", ex.MaxRelDiff)
	} else {
		fmt.Fprintf(w, "DOES NOT match the record (largest relative difference %.3g): %s\n", ex.MaxRelDiff, ex.Note)
	}
	fmt.Fprintln(w, "\nparameters:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, p := range ex.Parameters {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Name, p.Value, p.Source)
	}
	tw.Flush()
}

func clockOf(s string) string {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.Format("15:04:05.000")
	}
	return s
}

func get(o orderedJSON, key string) any {
	for _, f := range o {
		if f.Key == key {
			return f.Value
		}
	}
	return "-"
}
