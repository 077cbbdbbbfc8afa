// Package daemon builds everything `deadlabourd run` runs from the
// configuration (the GPUs, real or simulated, the meters, the ledger's
// engine, the sink, the metering proxies, the admin listener with the
// event API, the audit store and the daemon's own metrics), runs it, and
// stops it in order: the proxies and the event API drain, then the engine
// settles and flushes the ledger, then the sink delivers what is queued.
// It speaks systemd's notify protocol and pings its watchdog, and follows
// the GPUs of upstreams that name their processes (/proc and NVML).
package daemon
