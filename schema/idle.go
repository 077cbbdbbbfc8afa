package schema

import "github.com/deadlabour/deadlabour/estimator"

// Values of the tag share of deadlabour_idle.
const (
	// IdleAbsorbed: idle of intervals some request ran in, carried by
	// those requests' loaded figures.
	IdleAbsorbed = "absorbed"
	// IdleUnabsorbed: idle no record carries (overcapacity): intervals no
	// request ran in, and what unserved requests were charged.
	IdleUnabsorbed = "unabsorbed"
	// IdleUnmetered: wear while the daemon was down, no energy; no record
	// carries it either.
	IdleUnmetered = "unmetered"
)

// IdleShareKind is the share tag of an idle share.
func IdleShareKind(s estimator.IdleShare) string {
	switch {
	case s.Unmetered:
		return IdleUnmetered
	case s.Unabsorbed:
		return IdleUnabsorbed
	}
	return IdleAbsorbed
}

// IdlePoint is the deadlabour_idle point of one idle share of a device on
// node, stamped with the share's end. currency is that of its money fields,
// the tag currency as on deadlabour_request; "" leaves the tag out. market:
// a market-based intensity is configured, so co2e_market_g is written.
func IdlePoint(node, currency string, simulated, market bool, s estimator.IdleShare) Point {
	p := Point{
		Measurement: MeasurementIdle,
		Tags:        []Tag{{"currency", TagValue(currency)}, {"device", s.Device}, {"host", node}, {"share", IdleShareKind(s)}},
		Fields:      make([]Field, 0, 17),
		Time:        s.End,
	}
	p.Fields = append(p.Fields,
		Field{"energy_j", s.Joules},
		Field{"static_energy_j", s.StaticJoules},
		Field{"it_energy_j", s.Joules + s.StaticJoules},
		Field{"facility_energy_j", s.FacilityEnergyJ},
		Field{"co2e_g", s.CO2eG},
	)
	p.Fields = appendIf(p.Fields, market, Field{"co2e_market_g", s.CO2eMarketG})
	p.Fields = append(p.Fields,
		Field{"embodied_co2e_g", s.EmbodiedCO2eG},
		Field{"water_l", s.WaterOnsiteL + s.WaterOffsiteL},
		Field{"water_onsite_l", s.WaterOnsiteL},
		Field{"water_offsite_l", s.WaterOffsiteL},
		Field{"energy_cost", s.EnergyCost},
		Field{"depreciation_cost", s.DepreciationCost},
		Field{"dead_labour_cost", s.DepreciationCost + s.EnergyCost},
		Field{"duration_s", s.End.Sub(s.Start).Seconds()},
		Field{"meter", string(s.Method)},
		Field{"wear_ended", s.WearEnded},
		Field{"simulated", simulated},
	)
	return p
}
