package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// What the sender does with each answer of InfluxDB to a batch:
//
//	2xx                   delivered: resolved in the spool, deleted at the next commit
//	413                   split in halves, each sent again
//	400, 422              bisected until the refused lines stand alone, each with its
//	                      own answer (InfluxDB 1.8 writes the rest of a batch it
//	                      answers "partial write"); a refused line goes to the
//	                      dead-letter file with the server's message, the rest are
//	                      delivered, one log line per spell of dead letters.
//	                      But if two lines are refused with one message, in one batch
//	                      whatever else it holds, or one after the last line
//	                      dead-lettered was refused with it (a field type clash on
//	                      every record, a gateway that refuses the writes), the cause
//	                      is the sink's, not the lines': the batch is held (refused),
//	                      retried every BackoffMax, one log line; the bisection stops
//	                      at the second such line. A batch of one refused line is
//	                      tried once more when more lines come (then with them) or
//	                      after BackoffMax; at Close it is left in the spool.
//	401, 403              unauthorized: kept, retried every BackoffMax, one log line
//	404                   no_bucket: the same
//	429, 5xx, network     backed off with jitter (Retry-After honoured), kept, retried
//
// A line InfluxDB 1.8 wrote as part of a partial write (400) is sent again
// in its half: it overwrites itself. Lines beyond the retention policy are
// always dead-lettered, however many: no fix lets InfluxDB take them, and
// holding them would stop the spool for good after a long outage.
type action int

const (
	actDelivered action = iota
	actSplit            // 413: too large
	actBisect           // 400, 422: some lines refused
	actRetry            // transient: back off
	actHold             // 401, 403, 404: nothing will pass until someone fixes it
)

// outcome classes a write's result.
type outcome struct {
	act        action
	status     int    // HTTP status, 0 for a network error
	reason     string // retry label: the status, or "network"
	message    string // the server's message
	retryAfter time.Duration
	state      State
}

func classify(err error) outcome {
	if err == nil {
		return outcome{act: actDelivered, state: StateOK}
	}
	var herr *http2.Error
	if !errors.As(err, &herr) || herr.StatusCode == 0 {
		return outcome{act: actRetry, reason: "network", message: err.Error(), state: StateRetrying}
	}
	o := outcome{status: herr.StatusCode, reason: strconv.Itoa(herr.StatusCode), message: serverMessage(herr)}
	switch code := herr.StatusCode; {
	case code >= 200 && code < 300:
		o.act, o.state = actDelivered, StateOK
	case code == http.StatusRequestEntityTooLarge:
		o.act = actSplit
	case code == http.StatusBadRequest || code == http.StatusUnprocessableEntity:
		o.act = actBisect
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		o.act, o.state = actHold, StateUnauthorized
	case code == http.StatusNotFound:
		o.act, o.state = actHold, StateNoBucket
	default: // 429, 500, 502, 503, 504 and anything unexpected
		o.act, o.state = actRetry, StateRetrying
		o.retryAfter = retryAfter(herr.Header, time.Now())
	}
	return o
}

// retryAfter reads a Retry-After header given as seconds or as an HTTP
// date; 0 when absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}

// serverMessage is InfluxDB's own explanation. The client drops the body
// of a JSON error it cannot map ({"error": ...} on 1.8), so the transport
// keeps it (captureErrors) and this digs it out.
func serverMessage(herr *http2.Error) string {
	body := herr.Header.Get(capturedBody)
	var j struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	switch {
	case body != "" && json.Unmarshal([]byte(body), &j) == nil && (j.Error != "" || j.Message != ""):
		return strings.TrimSpace(j.Error + " " + j.Message)
	case body != "":
		return strings.TrimSpace(body)
	case herr.Message != "":
		return herr.Message
	}
	return herr.Error()
}

// capturedBody is the pseudo-header under which captureErrors hands the
// body of an error answer to serverMessage.
const capturedBody = "X-Deadlabour-Error-Body"

// captureErrors wraps a transport so that the body of a non-2xx answer
// (up to 64 KiB) is also kept in a response header the client copies into
// its error.
func captureErrors(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode < 300 {
			return resp, err
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if rerr == nil {
			resp.Header.Set(capturedBody, strings.ToValidUTF8(strings.ReplaceAll(string(body), "\n", " "), "?"))
		}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sendLoop sends batches until ctx is done: a batch as soon as it is full,
// or once its oldest point has waited FlushInterval.
func (w *Writer) sendLoop(ctx context.Context) {
	var failures int
	for ctx.Err() == nil {
		b, err := w.spool.next(w.opts.BatchSize, w.opts.BatchBytes)
		if err != nil {
			failures++
			w.log.Error("reading the spool failed", "err", err)
			sleep(ctx, w.nextBackoff(time.Duration(failures)*w.opts.BackoffMin, 0))
			continue
		}
		failures = 0
		wait := time.Duration(-1) // until a commit
		if b.last != 0 && !b.full && len(b.enqueued) > 0 {
			wait = w.opts.FlushInterval - w.opts.Now().Sub(time.Unix(0, b.enqueued[0]))
		}
		if b.last == 0 || !b.full && wait > 0 {
			w.waitForBatch(ctx, wait)
			continue
		}
		_ = w.send(ctx, &b) // only ctx ends it early; the loop sees that
	}
}

// waitForBatch waits for a commit, for d if d >= 0, or for ctx.
func (w *Writer) waitForBatch(ctx context.Context, d time.Duration) {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
	case <-w.sendNow:
	case <-timeout:
	}
}

// flush delivers everything committed, at shutdown, until ctx is done.
func (w *Writer) flush(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := w.spool.next(w.opts.BatchSize, w.opts.BatchBytes)
		if err != nil {
			return err
		}
		if b.last == 0 {
			return nil
		}
		if err := w.send(ctx, &b); err != nil {
			return err
		}
	}
}

// send delivers one batch: when every line is delivered or dead-lettered it
// is resolved; if ctx ends first (or, at Close, InfluxDB refuses the token
// or the bucket) it stays in the spool and send says why. A batch whose
// every line InfluxDB refuses with one message is held: send waits
// BackoffMax and returns with the batch still in the spool (at Close, at
// once, saying why).
func (w *Writer) send(ctx context.Context, b *spoolBatch) error {
	for _, c := range b.corrupt {
		if c.seq > w.corruptSeen { // once, though the batch may be read again
			w.deadLetterCorrupt(c)
			w.corruptSeen = c.seq
		}
	}
	if b.n() > 0 {
		if w.held != "" && w.stillRefused(ctx) {
			return w.hold(ctx)
		}
		var refused []refusal
		err := w.deliver(ctx, b, 0, b.n(), &refused)
		if err != nil && !errors.Is(err, errRefusedAlike) {
			return err
		}
		if r, ok := refusedAlike(refused, w.lastRefused); ok {
			w.held, w.heldLine = r.o.message, b.line(r.line)
			return w.hold(ctx)
		}
		if b.n() == 1 && len(refused) == 1 && w.deferred != b.last {
			// Alone, it cannot be told whether the line or the sink is
			// at fault: once more, with the lines that come meanwhile.
			if w.closing.Load() {
				return fmt.Errorf("sink: InfluxDB refused a lone line, left for the next start: %s", refused[0].o.message)
			}
			w.deferred = b.last
			w.waitForBatch(ctx, w.opts.BackoffMax)
			return ctx.Err()
		}
		w.held, w.heldLine = "", ""
		for _, r := range refused {
			w.deadLetter(b, r.line, r.o)
			if !beyondRetention(r.o.message) {
				w.lastRefused = r.o.message
			}
		}
		if len(refused) == 0 {
			w.spells.deadLetters.calm(time.Now())
		}
	}
	w.spool.resolve(*b)
	return nil
}

// errRefusedAlike: deliver stopped at the second line refused with one
// message; the batch is held.
var errRefusedAlike = errors.New("sink: lines refused alike")

func beyondRetention(msg string) bool { return strings.Contains(msg, "beyond retention") }

// refusal is a line InfluxDB refused for good, and its answer.
type refusal struct {
	line int
	o    outcome
}

// refusedAlike says whether the refusals of a batch mean that the sink
// cannot write, not that the lines are bad: two lines were refused with
// one message, or one with the message of the last line dead-lettered
// (prev), whatever else the batch holds (lines taken), and not for being
// beyond the retention policy, which no fix changes. It returns a refusal
// with that message.
func refusedAlike(refused []refusal, prev string) (refusal, bool) {
	seen := map[string]bool{}
	for _, r := range refused {
		msg := r.o.message
		if beyondRetention(msg) {
			continue
		}
		if seen[msg] || msg == prev {
			return r, true
		}
		seen[msg] = true
	}
	return refusal{}, false
}

// hold keeps a batch lines of which InfluxDB refused alike: the state
// says why (logged once), and the batch is tried again after BackoffMax
// (at Close, not at all).
func (w *Writer) hold(ctx context.Context) error {
	o := outcome{act: actHold, status: http.StatusBadRequest, reason: "refused", message: w.held, state: StateRefused}
	w.m.retry(o.reason)
	w.setState(o)
	if w.closing.Load() {
		return fmt.Errorf("sink: InfluxDB refuses lines alike: %s", w.held)
	}
	if !sleep(ctx, w.opts.BackoffMax) {
		return ctx.Err()
	}
	return nil
}

// stillRefused tries a line that held the batch alone: true if it is
// refused with the message that held the batch, so that a held sink costs
// InfluxDB one small write every BackoffMax, not a bisection. Anything
// else (it is taken, another answer) and the batch is sent as usual; a
// line taken here is sent again with its batch and overwrites itself.
func (w *Writer) stillRefused(ctx context.Context) bool {
	o, err := w.write(ctx, w.heldLine)
	return err == nil && o.act == actBisect && o.message == w.held
}

// write sends body once, under the write timeout, and says what InfluxDB
// answered; the error is ctx's when ctx ended first (cancelled, not
// refused: nothing to classify).
func (w *Writer) write(ctx context.Context, body string) (outcome, error) {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	err := w.api.WriteRecord(wctx, body)
	cancel()
	if err != nil && ctx.Err() != nil {
		return outcome{}, ctx.Err()
	}
	o := classify(err)
	w.m.observeWrite(time.Since(start), o)
	return o, nil
}

// deliver writes lines [lo, hi) of b, retrying, splitting and bisecting as the
// answers require, until each line is delivered or refused for good: those
// are added to refused. It returns ctx's error if ctx ends first, and
// errRefusedAlike as soon as a second line is refused with the message of
// an earlier one (the rest is not tried: the batch will be held).
func (w *Writer) deliver(ctx context.Context, b *spoolBatch, lo, hi int, refused *[]refusal) error {
	var backoff time.Duration
	for {
		o, err := w.write(ctx, b.text(lo, hi))
		if err != nil {
			return err // cancelled, not refused: the batch stays
		}
		switch o.act {
		case actDelivered:
			w.delivered(b, lo, hi)
			w.setState(o)
			return nil
		case actSplit, actBisect:
			if hi-lo == 1 {
				*refused = append(*refused, refusal{lo, o})
				if _, alike := refusedAlike(*refused, ""); alike {
					return errRefusedAlike
				}
				return nil
			}
			mid := lo + (hi-lo)/2
			if err := w.deliver(ctx, b, lo, mid, refused); err != nil {
				return err
			}
			return w.deliver(ctx, b, mid, hi, refused)
		}
		w.m.retry(o.reason)
		w.setState(o)
		if o.act == actHold {
			if w.closing.Load() {
				// Retrying until the deadline cannot fix a token or a
				// bucket: leave the batch for the next start now.
				return fmt.Errorf("sink: InfluxDB answered %d: %s", o.status, o.message)
			}
			backoff = w.opts.BackoffMax
		} else {
			backoff = w.nextBackoff(backoff, o.retryAfter)
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
	}
}

func (w *Writer) delivered(b *spoolBatch, lo, hi int) {
	w.m.sent.Add(uint64(hi - lo))
	now := w.opts.Now()
	for _, enq := range b.enqueued[lo:hi] {
		w.m.latency.Observe(now.Sub(time.Unix(0, enq)).Seconds())
	}
}

// setState records the sink's state after a write, and logs each change
// once: a refused token or a missing bucket as an error that says nothing
// is delivered until it is fixed.
func (w *Writer) setState(o outcome) {
	prev := State(w.m.state.Swap(int32(o.state)))
	if o.state != StateOK {
		w.m.reason.Store(new(o.message))
	}
	if prev == o.state {
		if o.state != StateOK {
			w.log.Debug("write failed again", "status", o.status, "error", o.message)
		}
		return
	}
	switch o.state {
	case StateOK:
		if since := w.m.failingSince.Swap(0); since != 0 {
			w.log.Info("writes to InfluxDB resumed", "after", time.Since(time.Unix(0, since)).Round(time.Millisecond),
				"spool_points", w.Stats().SpoolPoints)
		}
	case StateUnauthorized, StateNoBucket, StateRefused:
		w.m.failingSince.CompareAndSwap(0, time.Now().UnixNano())
		what := "InfluxDB refused the token (check influx.token_env or influx.token_file, and its write permission)"
		switch o.state {
		case StateNoBucket:
			what = "InfluxDB has no such bucket (on 1.x: database/retention-policy; create it)"
		case StateRefused:
			what = "InfluxDB refuses lines alike (a field type clash on every record, a proxy or gateway refusing writes), " +
				"so they are not dead-lettered"
		}
		w.log.Error(what+": nothing is delivered until this is fixed; points are kept in the spool and retried every "+w.opts.BackoffMax.String(),
			"status", o.status, "error", o.message)
	default:
		w.m.failingSince.CompareAndSwap(0, time.Now().UnixNano())
		w.log.Warn("writes to InfluxDB failed; points are kept in the spool and retried with backoff",
			"status", o.status, "error", o.message)
	}
}

// nextBackoff doubles prev within [BackoffMin, BackoffMax] with jitter, or
// follows the server's Retry-After up to BackoffMax.
func (w *Writer) nextBackoff(prev, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, w.opts.BackoffMax)
	}
	next := min(max(2*prev, w.opts.BackoffMin), w.opts.BackoffMax)
	// Between 3/4 and all of next, so restarted daemons do not march in step.
	return next - time.Duration(rand.Int64N(int64(next)/4+1))
}

// sleep waits d or until ctx is done; false if ctx is.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
