package report

// The Software Carbon Intensity (Green Software Foundation, ISO/IEC
// 21031:2024): SCI = (E × I + M) per R. E × I is the operational,
// location-based CO2e (co2e_g, Scope 2 location-based), M the embodied
// CO2e (embodied_co2e_g, Scope 3), R a request or 1,000 tokens. The plain
// SCI counts the software's own share (the active figures); the loaded
// SCI adds the idle its requests absorbed (loaded_co2e_g,
// loaded_embodied_co2e_g); on the TOTAL (meters) line it is everything the
// meters measured, overcapacity included.

// sci is E × I + M of the row; loaded picks the loaded fields.
func (r Row) sci(loaded bool) (float64, bool) {
	e, m := "co2e_g", "embodied_co2e_g"
	if loaded {
		e, m = "loaded_co2e_g", "loaded_embodied_co2e_g"
	}
	ei, oke := r.Sums[e]
	em, okm := r.Sums[m]
	return ei + em, oke && okm
}

// sciPer is the SCI per request, or per 1,000 tokens with perTokens.
func (r Row) sciPer(loaded, perTokens bool) (float64, bool) {
	c, ok := r.sci(loaded)
	if !perTokens {
		return safeDiv(c, r.Requests, ok)
	}
	t, okt := r.tokens()
	return safeDiv(1000*c, t, ok && okt)
}

func (r Row) sciPerRequest() (float64, bool)        { return r.sciPer(false, false) }
func (r Row) sciPer1kTokens() (float64, bool)       { return r.sciPer(false, true) }
func (r Row) sciLoadedPerRequest() (float64, bool)  { return r.sciPer(true, false) }
func (r Row) sciLoadedPer1kTokens() (float64, bool) { return r.sciPer(true, true) }

// co2ePerRequest is location-based operational CO2e per request.
func (r Row) co2ePerRequest() (float64, bool) {
	c, ok := r.Sums["co2e_g"]
	return safeDiv(c, r.Requests, ok)
}

func (r Row) embodiedLow() (float64, bool) {
	if r.embodied == nil {
		return 0, false
	}
	return r.embodied[0], true
}

func (r Row) embodiedHigh() (float64, bool) {
	if r.embodied == nil {
		return 0, false
	}
	return r.embodied[1], true
}

// derivedColumn is a figure computed from the sums.
type derivedColumn struct {
	name, header string
	f            func(Row) (float64, bool)
}

// derivedColumns are computed from the sums, in output order.
func derivedColumns() []derivedColumn {
	return []derivedColumn{
		{"j_per_token", "J/token", Row.jPerToken},
		{"wh_per_request", "Wh/request", Row.whPerRequest},
		{"co2e_g_per_request", "CO2e g/request", Row.co2ePerRequest},
		{"idle_share", "idle share", Row.idleShare},
		{"sci_g_per_request", "SCI g/request", Row.sciPerRequest},
		{"sci_g_per_1k_tokens", "SCI g/1k tokens", Row.sciPer1kTokens},
		{"sci_loaded_g_per_request", "loaded SCI g/request", Row.sciLoadedPerRequest},
		{"sci_loaded_g_per_1k_tokens", "loaded SCI g/1k tokens", Row.sciLoadedPer1kTokens},
		{"embodied_co2e_g_low", "embodied low g", Row.embodiedLow},
		{"embodied_co2e_g_high", "embodied high g", Row.embodiedHigh},
	}
}
