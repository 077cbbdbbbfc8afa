package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseIntensity(t *testing.T) {
	const good = "# exported 2026-03-01\n" +
		"datetime,location_g_per_kwh,Market g/kWh\n" +
		"2026-01-01T00:00:00Z,420,130\n" +
		"2026-01-01 00:30,410.5,120\n" +
		"1767228300,400,0\n" // 2026-01-01 00:45 UTC, Unix seconds
	in, err := ParseIntensity("ci.csv", []byte(good), "", "market g/kwh")
	if err != nil {
		t.Fatal(err)
	}
	want := []SeriesPoint{
		{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 420},
		{time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC), 410.5},
		{time.Date(2026, 1, 1, 0, 45, 0, 0, time.UTC), 400},
	}
	if len(in.Location) != 3 || len(in.Market) != 3 {
		t.Fatalf("rows %+v / %+v, want 3 each", in.Location, in.Market)
	}
	for i := range want {
		if !in.Location[i].Time.Equal(want[i].Time) || in.Location[i].Value != want[i].Value {
			t.Errorf("row %d = %+v, want %+v", i, in.Location[i], want[i])
		}
	}
	if in.Market[0].Value != 130 || in.Market[2].Value != 0 {
		t.Errorf("market = %+v", in.Market)
	}
	byName, err := ParseIntensity("ci.csv", []byte(good), "LOCATION_G_PER_KWH", "")
	if err != nil || byName.Market != nil || byName.Location[1].Value != 410.5 {
		t.Errorf("by column name: %+v, %v", byName, err)
	}

	for _, tc := range []struct {
		name, data, column, market, want string
	}{
		{"empty", "", "", "", "ci.csv: empty"},
		{"one column", "t\n2026-01-01T00:00:00Z\n", "", "", "ci.csv:1: want at least two columns"},
		{"no such column", "t,a\n", "b", "", `ci.csv:1: no column "b"`},
		{"no market column", "t,a\n", "", "m", `ci.csv:1: no column "m"`},
		{"no rows", "t,a\n", "", "", "no rows"},
		{"bad time", "t,a\n2026-01-01T00:00:00Z,1\nyesterday,2\n", "", "", `ci.csv:3: timestamp "yesterday"`},
		{"bad value", "t,a\n2026-01-01T00:00:00Z,1\n2026-01-01T00:10:00Z,-4\n", "", "", `ci.csv:3: a "-4": want a number`},
		{"nan", "t,a\n2026-01-01T00:00:00Z,1\n2026-01-01T00:10:00Z,NaN\n", "", "", `ci.csv:3: a "NaN": want a number`},
		{"infinite", "t,a\n2026-01-01T00:00:00Z,+Inf\n", "", "", `ci.csv:2: a "+Inf": want a number`},
		{"nan market", "t,a,m\n2026-01-01T00:00:00Z,1,nan\n", "", "m", `ci.csv:2: m "nan": want a number`},
		{"not increasing", "t,a\n2026-01-01T01:00:00Z,1\n2026-01-01T00:10:00Z,2\n", "", "", "ci.csv:3: timestamp 2026-01-01T00:10:00Z is not after"},
		{"gap", "t,a\n2026-01-01T00:00:00Z,1\n2026-01-01T03:00:00Z,2\n", "", "", "ci.csv:3: 3h0m0s after the previous row: rows must be hourly or finer"},
		{"short row", "t,a,m\n2026-01-01T00:00:00Z,1\n", "", "m", "ci.csv:2: no market-based column"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIntensity("ci.csv", []byte(tc.data), tc.column, tc.market)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPriceWindowParse(t *testing.T) {
	w, problems := PriceWindow{Days: []string{"Mon", "fri"}, From: "22:00", To: "06:30", PricePerKWh: 0.05}.Parse()
	if len(problems) != 0 || w.Days != 1<<time.Monday|1<<time.Friday || w.From != 22*time.Hour || w.To != 6*time.Hour+30*time.Minute {
		t.Errorf("window %+v, problems %v", w, problems)
	}
	if w, _ := (PriceWindow{From: "00:00", To: "24:00"}).Parse(); w.Days != 127 || w.To != 24*time.Hour {
		t.Errorf("every day to midnight: %+v", w)
	}
	_, problems = PriceWindow{Days: []string{"someday"}, From: "7", To: "25:00", PricePerKWh: -1}.Parse()
	for _, k := range []string{"days[0]", "from", "to", "price_per_kwh"} {
		if problems[k] == "" {
			t.Errorf("no problem reported for %s: %v", k, problems)
		}
	}
}

// The new keys' problems name the file, line and key.
func TestTariffProblems(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("t,g\n2026-01-01T00:00:00Z,x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml string
		line       int
		key, msg   string
	}{
		{"bad csv", "facility:\n  carbon_file: " + bad + "\n", 2, "facility.carbon_file", "bad.csv:2: g \"x\""},
		{"missing csv", "facility:\n  carbon_file: " + filepath.Join(dir, "none.csv") + "\n", 2, "facility.carbon_file", "no such file"},
		{"column without file", "facility:\n  carbon_market_column: m\n", 2, "facility.carbon_market_column", "not set"},
		{"both market", "facility:\n  carbon_file: " + bad + "\n  carbon_market_column: g\n  carbon_market_g_per_kwh: 10\n", 4, "facility.carbon_market_g_per_kwh", "not both"},
		{"zone", "facility:\n  price_timezone: Mars/Olympus\n", 2, "facility.price_timezone", "IANA"},
		{"window", "facility:\n  price_schedule:\n    - days: [mon, funday]\n      from: \"07:00\"\n      to: \"07:00\"\n", 3, "facility.price_schedule[0].days[1]", `"funday"`},
		{"empty window", "facility:\n  price_schedule:\n    - from: \"07:00\"\n      to: \"07:00\"\n", 4, "facility.price_schedule[0].to", "empty"},
		{"infinite price", "facility:\n  price_schedule:\n    - from: \"07:00\"\n      to: \"09:00\"\n      price_per_kwh: .inf\n", 5, "facility.price_schedule[0].price_per_kwh", "got +Inf"},
		{"marginal", "attribution:\n  marginal:\n    decode_j_per_token: -0.1\n", 3, "attribution.marginal.decode_j_per_token", "zero or more"},
		{"audit", "attribution:\n  audit_records: -1\n", 2, "attribution.audit_records", "zero"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml), -1)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && p.Line == tc.line && strings.Contains(p.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("problems = %q, want line %d key %q msg containing %q", err, tc.line, tc.key, tc.msg)
		})
	}
	good := filepath.Join(dir, "good.csv")
	if err := os.WriteFile(good, []byte("t,loc,mkt\n2026-01-01T00:00:00Z,300,50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("ok.yaml", []byte("facility:\n  carbon_file: "+good+"\n  carbon_market_column: mkt\n  price_timezone: Europe/Berlin\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	in, err := cfg.Intensity()
	if err != nil || in.Market[0].Value != 50 {
		t.Errorf("intensity %+v, %v", in, err)
	}
	if z, err := cfg.PriceZone(); err != nil || z.String() != "Europe/Berlin" {
		t.Errorf("zone %v, %v", z, err)
	}
}
