// Package sink stores the points of package schema and delivers them to
// InfluxDB without ever blocking the daemon: the Writer encodes what it is
// given, commits it to a bbolt spool (spool*.go), sends it in batches and
// classifies InfluxDB's answers (deliver.go), keeps what InfluxDB refuses
// for good in a dead-letter file (deadletter.go), stamps lines so that no
// run overwrites an earlier one's points (stamp.go), and exports its
// counters (metrics.go, stats.go).
package sink
