// Package schema is what deadlabour writes to InfluxDB (docs/schema.md):
// the measurement, tag and field names, the mapping of records, idle shares,
// GPU telemetry windows and node health to points (RequestSchema, IdlePoint,
// GPUPoint, HealthPoint), the list of request fields (RequestFields), and
// the line-protocol encoding of points (AppendLine), with the checks that
// keep a client's values writable (TagValue, StringValue).
//
// It depends on the estimator's types only; the sink stores and delivers
// its points.
package schema
