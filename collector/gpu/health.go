package gpu

import (
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Retry of an unhealthy GPU: after retryMin, doubling to retryMax.
const (
	retryMin = time.Second
	retryMax = time.Minute
	// readTimeout is how long a poll waits for one GPU's reads (normal:
	// well under a millisecond each). A GPU that has not answered by then
	// is marked unhealthy; the poll goes on with the others.
	readTimeout = time.Second
)

// DeviceHealth is the state of one GPU, for /healthz and the gauge of
// unhealthy GPUs.
type DeviceHealth struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	UUID    string `json:"uuid"`
	Healthy bool   `json:"healthy"`
	// Reason says why the GPU is unhealthy: the call and its error.
	Reason string `json:"reason,omitempty"`
	// Since is when the GPU became unhealthy (or healthy again).
	Since time.Time `json:"since"`
	// NextRetry is when an unhealthy GPU is read next.
	NextRetry time.Time `json:"next_retry,omitzero"`
	// Retries counts failed retries since it became unhealthy.
	Retries int `json:"retries,omitempty"`
	// CounterResets counts the times its energy counter went backwards.
	CounterResets int `json:"counter_resets,omitempty"`
}

// deviceFailure says whether an NVML error means the GPU itself is in
// trouble (as opposed to a call it does not support).
func deviceFailure(r nvml.Return) bool {
	switch r {
	case nvml.ERROR_GPU_IS_LOST, nvml.ERROR_UNKNOWN, nvml.ERROR_TIMEOUT,
		nvml.ERROR_RESET_REQUIRED, nvml.ERROR_GPU_NOT_FOUND:
		return true
	}
	return false
}

// callError is an NVML call that failed.
type callError struct {
	call string
	ret  nvml.Return
}

func (e *callError) Error() string { return fmt.Sprintf("%s: %v", e.call, e.ret) }
func (e *callError) Unwrap() error { return e.ret }

// hungError is a GPU whose reads did not return within the read deadline.
type hungError struct {
	timeout, waited time.Duration
}

func (e *hungError) Error() string {
	if e.waited <= 0 {
		return fmt.Sprintf("NVML calls did not return within %v (hung)", e.timeout)
	}
	return fmt.Sprintf("NVML calls did not return within %v (hung, still waiting after %v)", e.timeout, e.waited)
}

// failure returns a callError when ret is a device failure, else nil.
func failure(call string, ret nvml.Return) error {
	if deviceFailure(ret) {
		return &callError{call, ret}
	}
	return nil
}

// Health returns the health of every GPU, in index order. Safe to call
// from any goroutine.
func (c *Collector) Health() []DeviceHealth {
	return perDevice(c, func(d *deviceState) DeviceHealth { return d.health })
}

// Unhealthy is how many GPUs are unhealthy now.
func (c *Collector) Unhealthy() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.devices {
		if !d.health.Healthy {
			n++
		}
	}
	return n
}

// due says whether the device is read at this poll: healthy, or unhealthy
// and its retry is due. Only the poll goroutine writes health, so it reads
// it without the lock.
func (d *deviceState) due(now time.Time) bool {
	return d.health.Healthy || !now.Before(d.health.NextRetry)
}

// markUnhealthy records a failure at now: the first one logs one line and
// starts the backoff; a failed retry doubles it and logs at debug.
func (c *Collector) markUnhealthy(d *deviceState, now time.Time, err error) {
	d.meter.gap()
	d.resetActivity()
	c.mu.Lock()
	h := &d.health
	first := h.Healthy
	if first {
		d.backoff = retryMin
		h.Healthy, h.Since, h.Retries = false, now, 0
	} else {
		d.backoff = min(2*d.backoff, retryMax)
		h.Retries++
	}
	h.Reason = err.Error()
	h.NextRetry = now.Add(d.backoff)
	c.mu.Unlock()
	args := []any{"gpu", d.info.Index, "uuid", d.info.UUID, "err", err, "retry_in", d.backoff}
	var ce *callError
	if errors.As(err, &ce) {
		args = append(args, "nvml_return", int(ce.ret))
	}
	if first {
		c.log.Warn("GPU unhealthy: skipped until it answers again, retrying with backoff; the other GPUs carry on", args...)
		return
	}
	c.log.Debug("GPU still unhealthy", append(args, "retries", h.Retries)...)
}

// markHealthy records that an unhealthy GPU answered again.
func (c *Collector) markHealthy(d *deviceState, now time.Time) {
	c.mu.Lock()
	down := now.Sub(d.health.Since)
	d.health.Healthy, d.health.Since, d.health.Reason = true, now, ""
	d.health.NextRetry, d.health.Retries = time.Time{}, 0
	c.mu.Unlock()
	c.log.Info("GPU healthy again", "gpu", d.info.Index, "uuid", d.info.UUID, "down_for", down)
}

// countReset counts a backwards counter in the device's health.
func (c *Collector) countReset(d *deviceState) {
	c.mu.Lock()
	d.health.CounterResets++
	c.mu.Unlock()
}
