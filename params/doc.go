// Package params turns the configuration and the GPUs found into the
// estimator's parameters, and says where each input came from (a config
// line, the hardware catalogue, a default), as `deadlabourd audit` shows it.
package params
