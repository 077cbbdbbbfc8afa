package config

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // price_timezone works on hosts without a zoneinfo database
)

// SeriesPoint is one row of a time series: Value holds from Time until the
// next row's time.
type SeriesPoint struct {
	Time  time.Time
	Value float64
}

// Intensity is what a carbon-intensity file holds: the location-based
// series, and the market-based one when a market column is configured.
type Intensity struct {
	Location []SeriesPoint
	Market   []SeriesPoint // nil without facility.carbon_market_column
}

// maxIntensityStep is the longest gap between rows: the file must be hourly
// or finer, so that a missing stretch is an error, not a stale value.
const maxIntensityStep = time.Hour

// Intensity reads facility.carbon_file; nil, nil when none is configured.
func (c *Config) Intensity() (*Intensity, error) {
	f := c.Facility
	if f.CarbonFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(f.CarbonFile)
	if err != nil {
		return nil, err
	}
	return ParseIntensity(f.CarbonFile, data, f.CarbonColumn, f.CarbonMarketColumn)
}

// ParseIntensity parses a carbon-intensity CSV: a header row naming the
// columns, then one row per time, the first column a timestamp (RFC 3339;
// "2006-01-02 15:04[:05]" in UTC; or Unix seconds), rows in increasing time
// at most an hour apart, intensities in gCO2e/kWh. column names the
// location-based column (empty: the second column), marketColumn the
// market-based one (empty: none). Errors name the file, line and column.
func ParseIntensity(name string, data []byte, column, marketColumn string) (*Intensity, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty: want a header row (timestamp, intensity columns) and rows", name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	find := func(want string) (int, error) {
		for i, h := range header {
			if i > 0 && strings.EqualFold(strings.TrimSpace(h), strings.TrimSpace(want)) {
				return i, nil
			}
		}
		return 0, fmt.Errorf("%s:1: no column %q (the header has %s)", name, want, strings.Join(header, ", "))
	}
	loc, market := 1, -1
	if column != "" {
		if loc, err = find(column); err != nil {
			return nil, err
		}
	} else if len(header) < 2 {
		return nil, fmt.Errorf("%s:1: want at least two columns, a timestamp and an intensity, got %d", name, len(header))
	}
	if marketColumn != "" {
		if market, err = find(marketColumn); err != nil {
			return nil, err
		}
	}
	out := &Intensity{}
	var prev time.Time
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ts, err := parseTimestamp(rec[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: timestamp %q: %v", name, line, rec[0], err)
		}
		if !prev.IsZero() {
			switch {
			case !ts.After(prev):
				return nil, fmt.Errorf("%s:%d: timestamp %s is not after the previous row's (%s): rows must be in increasing time",
					name, line, ts.Format(time.RFC3339), prev.Format(time.RFC3339))
			case ts.Sub(prev) > maxIntensityStep:
				return nil, fmt.Errorf("%s:%d: %s after the previous row: rows must be hourly or finer (fill the gap)", name, line, ts.Sub(prev))
			}
		}
		prev = ts
		value := func(col int, what string) (float64, error) {
			if col >= len(rec) {
				return 0, fmt.Errorf("%s:%d: no %s column (%d fields)", name, line, what, len(rec))
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[col]), 64)
			if err != nil || !(v >= 0) || math.IsInf(v, 0) { // NaN fails v >= 0
				return 0, fmt.Errorf("%s:%d: %s %q: want a number of gCO2e/kWh, zero or more", name, line, header[col], rec[col])
			}
			return v, nil
		}
		v, err := value(loc, "intensity")
		if err != nil {
			return nil, err
		}
		out.Location = append(out.Location, SeriesPoint{ts, v})
		if market >= 0 {
			m, err := value(market, "market-based")
			if err != nil {
				return nil, err
			}
			out.Market = append(out.Market, SeriesPoint{ts, m})
		}
	}
	if len(out.Location) == 0 {
		return nil, fmt.Errorf("%s: no rows after the header", name)
	}
	return out, nil
}

func parseTimestamp(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && f < 1e11 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("want RFC 3339 (2026-01-01T00:00:00Z), 2026-01-01 00:00[:00] (UTC) or Unix seconds")
}

// PriceWindow is one time-of-use window of the electricity price.
type PriceWindow struct {
	// Days the window applies on: mon, tue, wed, thu, fri, sat, sun; empty: every day.
	Days []string `yaml:"days"`
	// From and To are local times (price_timezone) "HH:MM"; To before From
	// wraps past midnight (22:00-06:00); To 24:00 is the end of the day.
	From        string  `yaml:"from"`
	To          string  `yaml:"to"`
	PricePerKWh float64 `yaml:"price_per_kwh"`
}

// TOUWindow is a PriceWindow parsed: Days has bit time.Weekday set for each day.
type TOUWindow struct {
	Days     uint8
	From, To time.Duration
	Price    float64
}

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Parse checks and converts one window; errors name the key that is wrong.
func (w PriceWindow) Parse() (TOUWindow, map[string]string) {
	problems := map[string]string{}
	out := TOUWindow{Price: w.PricePerKWh}
	for i, d := range w.Days {
		wd, ok := dayNames[strings.ToLower(strings.TrimSpace(d))]
		if !ok {
			problems[fmt.Sprintf("days[%d]", i)] = fmt.Sprintf("want mon, tue, wed, thu, fri, sat or sun, got %q", d)
			continue
		}
		out.Days |= 1 << wd
	}
	if len(w.Days) == 0 {
		out.Days = 1<<7 - 1
	}
	var err error
	if out.From, err = clock(w.From); err != nil {
		problems["from"] = err.Error()
	}
	if out.To, err = clock(w.To); err != nil {
		problems["to"] = err.Error()
	}
	if _, ok := problems["from"]; !ok && out.From == out.To {
		problems["to"] = fmt.Sprintf("equals from (%s): the window would be empty", w.From)
	}
	if !(w.PricePerKWh >= 0) || math.IsInf(w.PricePerKWh, 0) { // NaN fails >= 0
		problems["price_per_kwh"] = fmt.Sprintf("must be a finite number, zero or more, got %v", w.PricePerKWh)
	}
	return out, problems
}

func clock(s string) (time.Duration, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("want a local time HH:MM between 00:00 and 24:00, got %q", s)
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, nil
}

// PriceZone is the time zone of the price schedule.
func (c *Config) PriceZone() (*time.Location, error) {
	return time.LoadLocation(c.Facility.PriceTimezone)
}

// KeyLine is the line of the config file that sets key (a dotted path such
// as facility.pue or models[0]); 0 when the file does not set it.
func (c *Config) KeyLine(key string) int { return c.lines[key] }
