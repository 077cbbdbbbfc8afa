package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/deadlabour/deadlabour/internal/influxtest"
)

const grafanaDir = "../deploy/grafana"

// The dashboard JSON this test reads: the parts Grafana runs queries from.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []dashVar `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

type dashVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
	Datasource *dashDatasource `json:"datasource"`
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashPanel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Datasource *dashDatasource           `json:"datasource"`
	Targets    []struct {
		RefID        string          `json:"refId"`
		Datasource   *dashDatasource `json:"datasource"`
		RawQuery     bool            `json:"rawQuery"`
		Query        string          `json:"query"`
		ResultFormat string          `json:"resultFormat"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // of a collapsed row
}

// allPanels flattens rows.
func (d dashboard) allPanels() []dashPanel {
	var out []dashPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// provisionedDatasource reads the data source provisioning file strictly.
func provisionedDatasource(t *testing.T) (uid, typ string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(grafanaDir, "provisioning/datasources/deadlabour.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, Access, URL string
			IsDefault                    bool `yaml:"isDefault"`
			Editable                     bool
			JSONData                     map[string]any    `yaml:"jsonData"`
			SecureJSONData               map[string]string `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("datasource provisioning: %v", err)
	}
	if f.APIVersion != 1 || len(f.Datasources) != 1 {
		t.Fatalf("datasource provisioning: apiVersion %d, %d data sources; want 1 and 1", f.APIVersion, len(f.Datasources))
	}
	ds := f.Datasources[0]
	if ds.JSONData["version"] != "InfluxQL" || ds.JSONData["httpMode"] != "POST" {
		t.Errorf("data source: jsonData %v: want version InfluxQL and httpMode POST", ds.JSONData)
	}
	if !strings.HasPrefix(ds.SecureJSONData["httpHeaderValue1"], "Token ") || ds.JSONData["httpHeaderName1"] != "Authorization" {
		t.Error("data source: the token should go in an Authorization: Token header (1.x, 2.x and 3.x accept it)")
	}
	return ds.UID, ds.Type
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(grafanaDir, "dashboards/*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s/dashboards: %v", grafanaDir, err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// The dashboards are well formed, use the provisioned data source, and
// their every query is raw InfluxQL that this test can run.
func TestDashboardsWellFormed(t *testing.T) {
	uid, typ := provisionedDatasource(t)
	uids := map[string]string{}
	for file, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: no uid or title", file)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share uid %s", file, other, d.UID)
		}
		uids[d.UID] = file
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			if vars[v.Name] {
				t.Errorf("%s: variable %s defined twice", file, v.Name)
			}
			vars[v.Name] = true
			if v.Type == "datasource" && (string(v.Query) != `"`+typ+`"` || v.Current.Value != uid) {
				t.Errorf("%s: datasource variable %s: query %s, current %v; want %q and the provisioned uid %s", file, v.Name, v.Query, v.Current.Value, typ, uid)
			}
		}
		ids := map[int]bool{}
		for _, p := range d.allPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", file, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q has no valid gridPos", file, p.Title)
			}
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				ds := tg.Datasource
				if ds == nil {
					ds = p.Datasource
				}
				if ds == nil || ds.Type != typ || ds.UID != "${datasource}" {
					t.Errorf("%s: panel %q: data source %+v, want the datasource variable", file, p.Title, ds)
				}
				if !tg.RawQuery || strings.TrimSpace(tg.Query) == "" || tg.RefID == "" {
					t.Errorf("%s: panel %q: want raw InfluxQL with a refId (builder queries cannot be tested)", file, p.Title)
				}
				if tg.ResultFormat != "time_series" && tg.ResultFormat != "table" {
					t.Errorf("%s: panel %q: resultFormat %q", file, p.Title, tg.ResultFormat)
				}
				if aggregatesMoney(tg.Query) && !regexp.MustCompile(`GROUP BY .*"currency"`).MatchString(tg.Query) {
					t.Errorf("%s: panel %q adds up money without GROUP BY \"currency\": %s", file, p.Title, tg.Query)
				}
				for _, m := range regexp.MustCompile(`\$(\w+)`).FindAllStringSubmatch(tg.Query, -1) {
					if !vars[m[1]] && !grafanaMacros[m[1]] {
						t.Errorf("%s: panel %q uses $%s, which is neither a variable nor a macro", file, p.Title, m[1])
					}
				}
			}
		}
	}
	want := []string{"deadlabour-audit", "deadlabour-fleet", "deadlabour-node-health", "deadlabour-overcapacity"}
	var got []string
	for u := range uids {
		got = append(got, u)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dashboards %v, want %v", got, want)
	}
}

// aggregatesMoney: q adds up or averages a money field (_cost), which is
// only meaningful within one currency.
func aggregatesMoney(q string) bool {
	return regexp.MustCompile(`(sum|mean|max|min)\("[a-z_]*_cost"\)`).MatchString(q)
}

var grafanaMacros = map[string]bool{"timeFilter": true, "__interval": true, "__interval_ms": true, "interval": true, "__from": true, "__to": true}

// grafanaRegexEscape escapes a variable value for a /regex/, as Grafana's
// InfluxDB data source does for multi-value and All variables.
func grafanaRegexEscape(s string) string {
	return regexp.MustCompile(`[\\^$*+?.()|[\]{}/]`).ReplaceAllString(s, `\$0`)
}

// macros replaces Grafana's InfluxQL macros for a time range and interval.
func macros(q string, from, to time.Time, interval time.Duration) string {
	return strings.NewReplacer(
		"$timeFilter", fmt.Sprintf("time >= %dms and time <= %dms", from.UnixMilli(), to.UnixMilli()),
		"$__interval_ms", fmt.Sprint(interval.Milliseconds()),
		"$__interval", interval.String(),
		"$interval", interval.String(),
		"$__from", fmt.Sprint(from.UnixMilli()),
		"$__to", fmt.Sprint(to.UnixMilli()),
	).Replace(q)
}

// substitute replaces $var, ${var} and [[var]] with their values, longest
// names first.
func substitute(q string, values map[string]string) string {
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, n := range names {
		q = strings.NewReplacer("${"+n+"}", values[n], "[["+n+"]]", values[n], "$"+n, values[n]).Replace(q)
	}
	return q
}

// selection is how the template variables are set for one pass.
type selection int

const (
	selectAll    selection = iota // "All", i.e. the variable's allValue
	selectValues                  // every value picked one by one: (a|b|c)
)

// Every query of every panel, with Grafana's macros and template variables
// substituted, runs against a real InfluxDB filled by two simulated nodes,
// and returns data. Template variable queries run too, and their values are
// what the panels are run with.
func TestDashboardQueriesReturnData(t *testing.T) {
	run := runFleet(t)
	const interval = time.Second
	for file, d := range loadDashboards(t) {
		for _, sel := range []selection{selectAll, selectValues} {
			name := file + map[selection]string{selectAll: "/All", selectValues: "/values"}[sel]
			t.Run(name, func(t *testing.T) {
				values := map[string]string{}
				for _, v := range d.Templating.List {
					switch v.Type {
					case "datasource":
					case "custom":
						// simulated: the fleet's data was written under --simulate.
						values[v.Name] = "true"
					case "textbox":
						var def string
						json.Unmarshal(v.Query, &def)
						values[v.Name] = def
					case "query":
						var q string
						json.Unmarshal(v.Query, &q)
						q = substitute(macros(q, run.from, run.to, interval), values)
						series, err := queryOrErr(run.influx, q)
						if err != nil {
							t.Fatalf("variable %s: %v", v.Name, err)
						}
						var vals []string
						for _, s := range series {
							for _, r := range s.Rows() {
								if val, ok := r.String("value"); ok {
									vals = append(vals, grafanaRegexEscape(val))
								}
							}
						}
						if len(vals) == 0 {
							t.Fatalf("variable %s: %s returned no values", v.Name, q)
						}
						if sel == selectAll && v.IncludeAll && v.AllValue != "" {
							values[v.Name] = v.AllValue
						} else {
							values[v.Name] = "(" + strings.Join(vals, "|") + ")"
						}
					default:
						t.Fatalf("variable %s: type %s not handled by this test", v.Name, v.Type)
					}
				}
				for _, p := range d.allPanels() {
					for _, tg := range p.Targets {
						q := substitute(macros(tg.Query, run.from, run.to, interval), values)
						if m := regexp.MustCompile(`\$[A-Za-z_{]|\[\[`).FindString(q); m != "" {
							t.Errorf("panel %q %s: %q left unsubstituted in %s", p.Title, tg.RefID, m, q)
							continue
						}
						series, err := queryOrErr(run.influx, q)
						if err != nil {
							t.Errorf("panel %q %s: %v", p.Title, tg.RefID, err)
							continue
						}
						if empty := emptyColumns(series); len(empty) > 0 {
							t.Errorf("panel %q %s returned no data for %s: %s", p.Title, tg.RefID, strings.Join(empty, ", "), q)
						}
						// Money is summed per currency: every point of the
						// fleet, request or idle, carries facility.currency.
						for _, s := range series {
							if aggregatesMoney(q) && s.Tags["currency"] != "USD" {
								t.Errorf("panel %q %s: a series of money in currency %q, want USD: %s", p.Title, tg.RefID, s.Tags["currency"], q)
							}
						}
					}
				}
			})
		}
	}
}

// queryOrErr runs a query, returning its error instead of failing the test.
func queryOrErr(influx *influxtest.Server, q string) ([]influxtest.Series, error) {
	return influx.QueryErr(q)
}

// emptyColumns lists the columns (besides time) that are null in every row
// of every series, "(no rows)" when there are none. Columns of fields that
// the schema allows to be absent everywhere are not listed.
func emptyColumns(series []influxtest.Series) []string {
	seen := map[string]bool{}
	rows := 0
	for _, s := range series {
		for _, row := range s.Values {
			rows++
			for i, v := range row {
				if i < len(s.Columns) {
					seen[s.Columns[i]] = seen[s.Columns[i]] || v != nil
				}
			}
		}
	}
	if rows == 0 {
		return []string{"(no rows)"}
	}
	var empty []string
	for col, ok := range seen {
		if !ok && col != "time" && !mayBeAbsent[col] {
			empty = append(empty, col)
		}
	}
	sort.Strings(empty)
	return empty
}

// mayBeAbsent are request fields that docs/schema.md allows to be missing
// from every record of a run: token details the upstream did not report,
// and the market-based CO2e that only a configured intensity column gives.
var mayBeAbsent = map[string]bool{"cached_tokens": true, "reasoning_tokens": true, "co2e_market_g": true}
