// Package report totals the request records over a period, by model,
// tenant, GPU, node or upstream, from InfluxDB (InfluxQL), from line
// protocol (the spool's, or an exported file) or from a running daemon's
// spool, and writes them as a table, CSV or JSON.
package report
