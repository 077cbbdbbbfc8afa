package config

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
)

//go:embed regions.csv
var regionsCSV []byte

// RegionDataset names the regional table in records and messages.
const RegionDataset = "ecologits-0adc8ab"

// WorldRegion is the code of the world row of the regional table, whose
// figures are the built-in defaults.
const WorldRegion = "WOR"

// Region is one row of the embedded regional table (regions.csv, its header
// names the source, basis and licence).
type Region struct {
	Alpha2, Alpha3, Name string
	// CarbonGPerKWh is the location-based (life-cycle) grid intensity.
	CarbonGPerKWh float64
	// WaterLPerKWh is the water consumed per kWh of electricity generated
	// (off-site water).
	WaterLPerKWh float64
}

// Code is the region's alpha-2 code, or its alpha-3 code where it has none
// (the world row, WOR).
func (r Region) Code() string {
	if r.Alpha2 != "" {
		return r.Alpha2
	}
	return r.Alpha3
}

// Regions returns the embedded regional table, in file order.
func Regions() []Region {
	r := csv.NewReader(bytes.NewReader(regionsCSV))
	r.Comment = '#'
	r.FieldsPerRecord = 5
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		panic(fmt.Sprintf("embedded regions.csv: %v", err)) // a build defect, caught by tests
	}
	out := make([]Region, 0, len(rows)-1)
	for _, row := range rows[1:] {
		c, err1 := strconv.ParseFloat(row[3], 64)
		w, err2 := strconv.ParseFloat(row[4], 64)
		if err1 != nil || err2 != nil {
			panic(fmt.Sprintf("embedded regions.csv: row %v: bad number", row))
		}
		out = append(out, Region{Alpha2: row[0], Alpha3: row[1], Name: row[2], CarbonGPerKWh: c, WaterLPerKWh: w})
	}
	return out
}

// LookupRegion finds a region by its ISO 3166-1 alpha-2 or alpha-3 code,
// case-insensitive and trimmed ("fr", "FRA"); WOR is the world.
func LookupRegion(code string) (Region, bool) {
	code = strings.ToUpper(strings.TrimSpace(code))
	if code == "" {
		return Region{}, false
	}
	for _, r := range Regions() {
		if code == r.Alpha2 || code == r.Alpha3 {
			return r, true
		}
	}
	return Region{}, false
}

// written reports whether the file gave key a value (not null).
func (c *Config) written(key string) bool {
	_, ok := c.lines[key]
	return ok && !c.empty[key]
}

// region is the configured region, if facility.region names a known one.
func (c *Config) region() (Region, bool) {
	return LookupRegion(c.Facility.Region)
}

// applyRegion puts the region's figures in place of the defaults of the
// factors the file did not write: carbon_g_per_kwh (carbon_file, where set,
// still wins at run time) and water_offsite_l_per_kwh.
func (c *Config) applyRegion() {
	r, ok := c.region()
	if !ok {
		return
	}
	if !c.written("facility.carbon_g_per_kwh") {
		c.Facility.CarbonGPerKWh = r.CarbonGPerKWh
	}
	if !c.written("facility.water_offsite_l_per_kwh") {
		c.Facility.WaterOffsiteLPerKWh = r.WaterLPerKWh
	}
}

// Factor says where one of the facility's factors came from.
type Factor struct {
	// Name is carbon, carbon_market, water or price.
	Name string
	// Source is region:FR/ecologits-0adc8ab, config, file:<basename>,
	// schedule, default:world/ecologits-0adc8ab (carbon, water) or default
	// (price).
	Source string
}

// FactorSources says where the carbon intensity, the market-based
// intensity (only when one is configured), the off-site water and the
// price come from, in that order. Precedence: carbon: carbon_file >
// carbon_g_per_kwh written in the file > region > world default; water:
// water_offsite_l_per_kwh written > region > world default; price:
// price_schedule > price_per_kwh written > default.
func (c *Config) FactorSources() []Factor {
	f := c.Facility
	r, hasRegion := c.region()
	regional := func(written bool) string {
		switch {
		case written:
			return "config"
		case hasRegion:
			return "region:" + r.Code() + "/" + RegionDataset
		}
		return "default:world/" + RegionDataset
	}
	base := func(path string) string {
		if i := strings.LastIndexAny(path, `/\`); i >= 0 {
			return path[i+1:]
		}
		return path
	}
	var out []Factor
	if f.CarbonFile != "" {
		out = append(out, Factor{"carbon", "file:" + base(f.CarbonFile)})
	} else {
		out = append(out, Factor{"carbon", regional(c.written("facility.carbon_g_per_kwh"))})
	}
	switch {
	case f.CarbonFile != "" && f.CarbonMarketColumn != "":
		out = append(out, Factor{"carbon_market", "file:" + base(f.CarbonFile)})
	case f.CarbonMarketGPerKWh != nil:
		out = append(out, Factor{"carbon_market", "config"})
	}
	out = append(out, Factor{"water", regional(c.written("facility.water_offsite_l_per_kwh"))})
	switch {
	case len(f.PriceSchedule) > 0:
		out = append(out, Factor{"price", "schedule"})
	case c.written("facility.price_per_kwh"):
		out = append(out, Factor{"price", "config"})
	default:
		out = append(out, Factor{"price", "default"})
	}
	return out
}

// FactorString prints factors as name=source pairs joined by commas:
// "carbon=region:FR/ecologits-0adc8ab,water=region:FR/ecologits-0adc8ab,price=config".
func FactorString(fs []Factor) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Name + "=" + f.Source
	}
	return strings.Join(parts, ",")
}

// DefaultFactorWarnings says, one line per factor, which factors fell back
// to a built-in default rather than the file or its region.
func (c *Config) DefaultFactorWarnings() []string {
	var out []string
	for _, f := range c.FactorSources() {
		if !strings.HasPrefix(f.Source, "default") {
			continue
		}
		switch f.Name {
		case "carbon":
			out = append(out, fmt.Sprintf("facility: no region and no carbon_g_per_kwh or carbon_file: using the world average %v gCO2e/kWh (lifecycle, %s); grid intensity moves CO2e tenfold between regions — set facility.region",
				c.Facility.CarbonGPerKWh, RegionDataset))
		case "water":
			out = append(out, fmt.Sprintf("facility: no region and no water_offsite_l_per_kwh: using the world average %v L/kWh of off-site water (%s); the water of electricity moves tenfold between regions — set facility.region",
				c.Facility.WaterOffsiteLPerKWh, RegionDataset))
		case "price":
			out = append(out, fmt.Sprintf("facility: no price_per_kwh or price_schedule: using the default %v %s/kWh, an assumption — set your contract's price",
				c.Facility.PricePerKWh, c.Facility.Currency))
		}
	}
	return out
}
