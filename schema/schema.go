package schema

// Measurement names. They, their tags and their fields are a public
// interface (docs/schema.md): change them only with a migration note.
const (
	MeasurementRequest = "deadlabour_request"
	MeasurementIdle    = "deadlabour_idle"
	MeasurementGPU     = "deadlabour_gpu"
	// MeasurementHealth is the node's own state, one point per node per
	// gpu.report_interval (docs/schema.md). Its name, tag and fields are the
	// ones agreed for the node-health dashboard.
	MeasurementHealth = "deadlabour_health"
)
