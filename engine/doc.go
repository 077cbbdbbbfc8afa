// Package engine is the daemon's poll loop: it reads the meters, takes the
// request events the proxies and the event API queue (SpanQueue), runs the
// estimator's ledger and hands the points to the sink: request records,
// idle windows, GPU telemetry and the health point.
package engine
