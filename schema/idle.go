package schema

import "github.com/deadlabour/deadlabour/estimator"

// IdlePoint is the deadlabour_idle point of one idle share of a device on
// node, stamped with the share's end. currency is that of its money field
// (depreciation_cost), the tag currency as on deadlabour_request; "" leaves
// the tag out.
func IdlePoint(node, currency string, simulated bool, s estimator.IdleShare) Point {
	return Point{
		Measurement: MeasurementIdle,
		Tags:        []Tag{{"currency", TagValue(currency)}, {"device", s.Device}, {"host", node}},
		Fields: []Field{
			{"energy_j", s.Joules},
			{"static_energy_j", s.StaticJoules},
			{"depreciation_cost", s.DepreciationCost},
			{"embodied_co2e_g", s.EmbodiedCO2eG},
			{"meter", string(s.Method)},
			{"simulated", simulated},
		},
		Time: s.End,
	}
}
