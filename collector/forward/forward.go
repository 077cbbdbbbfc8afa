// Package forward posts a sidecar proxy's requests to a node daemon's event
// API (POST /v1/requests): a begin event when a request starts, an end
// event with its tokens and status when it ends, in batches. It is the
// proxies' recorder in forwarding mode (config forward): it never blocks
// them, holding at most MaxQueue events and dropping, counted, beyond.
package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// Options configure a Forwarder.
type Options struct {
	URL           string // the node daemon's admin listener, e.g. http://10.0.0.7:9464
	Token         []byte // its admin bearer token; nil: none
	Batch         int    // the most events in one post
	FlushInterval time.Duration
	MaxQueue      int
	// FlushTimeout bounds the last posts at shutdown.
	FlushTimeout time.Duration
	Client       *http.Client // nil: a client with a 10s timeout
	Logger       *slog.Logger
}

// Backoff between failed posts of a batch.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// path is the event API's route on the node daemon (admin.PathRequests).
const path = "/v1/requests"

// Forwarder queues events and posts them. Begin, End and Submit are safe
// for concurrent use and never block; Run posts.
type Forwarder struct {
	opts     Options
	url      string
	queue    chan event
	dropped  atomic.Int64 // events dropped on a full queue
	refused  atomic.Int64 // events the node daemon refused (4xx)
	sent     atomic.Int64
	dropping atomic.Bool // a run of drops is under way (logged once)
}

// Stats are the forwarder's counters.
type Stats struct{ Sent, Dropped, Refused int64 }

// New makes a forwarder.
func New(opts Options) (*Forwarder, error) {
	if opts.URL == "" || opts.Batch <= 0 || opts.MaxQueue <= 0 || opts.FlushInterval <= 0 {
		return nil, errors.New("forward: needs a URL, a batch size, a flush interval and a queue size")
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{opts: opts, url: strings.TrimSuffix(opts.URL, "/") + path, queue: make(chan event, opts.MaxQueue)}, nil
}

// Begin queues a begin event.
func (f *Forwarder) Begin(s estimator.Span) { f.put(beginEvent(s)) }

// End queues an end event (with its start, so that the node daemon records
// the request whole even if its begin was dropped).
func (f *Forwarder) End(s estimator.Span) { f.put(endEvent("end", s)) }

// Submit queues a whole request never begun (the sidecar's own event API).
func (f *Forwarder) Submit(s estimator.Span) { f.put(endEvent("span", s)) }

// Stats reads the counters.
func (f *Forwarder) Stats() Stats {
	return Stats{Sent: f.sent.Load(), Dropped: f.dropped.Load(), Refused: f.refused.Load()}
}

func (f *Forwarder) put(e event) {
	select {
	case f.queue <- e:
		if f.dropping.Load() && f.dropping.CompareAndSwap(true, false) {
			f.opts.Logger.Info("forward: the queue has room again", "dropped_total", f.dropped.Load())
		}
	default:
		f.dropped.Add(1)
		if f.dropping.CompareAndSwap(false, true) {
			f.opts.Logger.Warn("forward: queue full, dropping request events (the node daemon is down or slow); requests are not held",
				"max_queue", f.opts.MaxQueue, "url", f.opts.URL)
		}
	}
}

// Run posts batches until ctx ends, then posts what is queued under
// FlushTimeout. Call it once.
func (f *Forwarder) Run(ctx context.Context) {
	tick := time.NewTicker(f.opts.FlushInterval)
	defer tick.Stop()
	batch := make([]event, 0, f.opts.Batch)
	for {
		select {
		case e := <-f.queue:
			if batch = append(batch, e); len(batch) < f.opts.Batch {
				continue
			}
		case <-tick.C:
			if len(batch) == 0 {
				continue
			}
		case <-ctx.Done():
			f.flush(batch)
			return
		}
		if !f.send(ctx, batch) { // shutdown while retrying
			f.flush(batch)
			return
		}
		batch = batch[:0]
	}
}

// flush posts batch and everything queued, under FlushTimeout.
func (f *Forwarder) flush(batch []event) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.FlushTimeout)
	defer cancel()
	for {
		for len(batch) < f.opts.Batch && len(f.queue) > 0 {
			batch = append(batch, <-f.queue)
		}
		if len(batch) == 0 {
			return
		}
		if !f.send(ctx, batch) {
			n := int64(len(batch) + len(f.queue))
			f.dropped.Add(n)
			f.opts.Logger.Warn("forward: events left unsent at shutdown", "events", n, "url", f.opts.URL)
			return
		}
		batch = batch[:0]
	}
}

// send posts one batch, retrying with backoff until it is taken, refused,
// or ctx ends; false when ctx ended first.
func (f *Forwarder) send(ctx context.Context, batch []event) bool {
	body, err := json.Marshal(batch)
	if err != nil { // cannot happen: plain values
		f.refused.Add(int64(len(batch)))
		return true
	}
	wait := backoffMin
	for attempt := 0; ; attempt++ {
		status, msg, err := f.post(ctx, body)
		switch {
		case err == nil && status < 300:
			f.sent.Add(int64(len(batch)))
			if attempt > 0 {
				f.opts.Logger.Info("forward: the node daemon takes events again", "attempts", attempt+1)
			}
			return true
		case err == nil && status != http.StatusTooManyRequests && status < 500 && status != http.StatusRequestTimeout:
			// Refused: posting it again would be refused again.
			f.refused.Add(int64(len(batch)))
			f.opts.Logger.Warn("forward: the node daemon refused a batch of events; they are not recorded",
				"events", len(batch), "status", status, "answer", msg)
			return true
		}
		if attempt == 0 {
			f.opts.Logger.Warn("forward: cannot post events to the node daemon; retrying", "url", f.opts.URL, "status", status, "err", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

func (f *Forwarder) post(ctx context.Context, body []byte) (status int, answer string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if f.opts.Token != nil {
		req.Header.Set("Authorization", "Bearer "+string(f.opts.Token))
	}
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// event is one event as the event API reads it (collector/requests
// eventIn).
type event struct {
	Type             string     `json:"type"`
	ID               string     `json:"id"`
	Upstream         string     `json:"upstream"`
	Model            string     `json:"model,omitempty"`
	Tenant           string     `json:"tenant,omitempty"`
	GPUs             []string   `json:"gpus,omitempty"`
	Start            *time.Time `json:"start,omitempty"`
	FirstToken       *time.Time `json:"first_token,omitempty"`
	End              *time.Time `json:"end,omitempty"`
	Status           any        `json:"status,omitempty"` // a code, or client_closed, upstream_error
	Served           *bool      `json:"served,omitempty"`
	UsageSource      string     `json:"usage_source,omitempty"`
	PromptTokens     *int64     `json:"prompt_tokens,omitempty"`
	CompletionTokens *int64     `json:"completion_tokens,omitempty"`
	CachedTokens     *int64     `json:"cached_tokens,omitempty"`
	ReasoningTokens  *int64     `json:"reasoning_tokens,omitempty"`
}

func beginEvent(s estimator.Span) event {
	start := s.Start
	return event{Type: "begin", ID: s.ID, Upstream: s.Upstream, Model: s.Model, Tenant: s.Tenant, GPUs: s.Devices, Start: &start}
}

func endEvent(kind string, s estimator.Span) event {
	e := beginEvent(s)
	e.Type = kind
	end, served := s.End, s.Served
	e.End, e.Served = &end, &served
	if !s.FirstToken.IsZero() && !s.FirstToken.Before(s.Start) {
		ft := s.FirstToken
		e.FirstToken = &ft
	}
	if n, err := strconv.Atoi(s.Status); err == nil {
		e.Status = n
	} else if s.Status != "" {
		e.Status = s.Status
	}
	counts := 0
	for _, c := range []struct {
		v   int64
		dst **int64
	}{{s.PromptTokens, &e.PromptTokens}, {s.CompletionTokens, &e.CompletionTokens},
		{s.CachedTokens, &e.CachedTokens}, {s.ReasoningTokens, &e.ReasoningTokens}} {
		if c.v >= 0 {
			v := c.v
			*c.dst = &v
			counts++
		}
	}
	if counts > 0 && s.UsageSource != estimator.UsageUnknown {
		e.UsageSource = s.UsageSource
	}
	return e
}
