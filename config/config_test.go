package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestExampleValidates(t *testing.T) {
	cfg, err := Load("example.yaml", 8)
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if got, want := cfg.Upstreams[0].GPUs, []string{"0", "1", "2", "3"}; !reflect.DeepEqual(got, want) {
		t.Errorf("gpus = %v, want %v", got, want)
	}
	if got := cfg.Hardware[0].Life.D(); got != 5*Year {
		t.Errorf("life = %v, want 5y", got)
	}
	if got := cfg.Spool.MaxBytes; got != 1<<30 {
		t.Errorf("spool.max_bytes = %d, want 1GiB", got)
	}
}

// Every key of the schema appears in example.yaml, so that it documents them all.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	indexLines(&root, "", lines, map[string]*yaml.Node{})
	have := map[string]bool{}
	for p := range lines {
		// upstreams[0].target -> upstreams.target
		for strings.Contains(p, "[") {
			i, j := strings.Index(p, "["), strings.Index(p, "]")
			p = p[:i] + p[j+1:]
		}
		have[p] = true
	}
	deprecated := map[string]bool{}
	for _, d := range deprecatedKeys {
		deprecated[d.key] = true
	}
	for _, key := range schemaKeys(reflect.TypeOf(Config{}), "") {
		if !have[key] && !deprecated[key] {
			t.Errorf("example.yaml does not document %q", key)
		}
	}
}

func schemaKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		keys = append(keys, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
			keys = append(keys, schemaKeys(ft, key)...)
		}
	}
	return keys
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("min.yaml", []byte("upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GPU.Interval.D() != 100*time.Millisecond || cfg.Facility.PUE != 1.2 || cfg.Attribution.Weighting != "tokens" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	u := cfg.Upstreams[0]
	if u.MaxBodyBytes != 16<<20 || u.IncludeUsage == nil || !*u.IncludeUsage {
		t.Errorf("upstream defaults not applied: %+v", u)
	}
	if u.ResponseHeaderTimeout != 0 {
		t.Errorf("response_header_timeout = %s, want 0 (no limit)", u.ResponseHeaderTimeout.D())
	}
	cfg, err = Parse("to.yaml", []byte("upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n    response_header_timeout: 90s\n"), -1)
	if err != nil || cfg.Upstreams[0].ResponseHeaderTimeout.D() != 90*time.Second {
		t.Errorf("response_header_timeout: 90s parsed as %v, %v", cfg, err)
	}
	// A body budget below 16MiB lowers the default body cap to it: a file
	// that sets only the budget stays valid.
	cfg, err = Parse("budget.yaml", []byte("proxy:\n  max_buffered_bytes: 4MiB\nupstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n"), -1)
	if err != nil || cfg.Upstreams[0].MaxBodyBytes != 4<<20 {
		t.Errorf("max_body_bytes under a 4MiB budget: %v, %v; want 4MiB", cfg, err)
	}
	if _, err := Parse("empty.yaml", nil, -1); err != nil {
		t.Errorf("an empty file is all defaults, got %v", err)
	}
	// Null where the default is "nothing" (an unset pointer: the
	// catalogue's figure, the automatic choice; an empty string; a zero;
	// an empty section or list) says just that, and is no error.
	nulls := "gpu:\nmodels: ~\nfacility:\n  carbon_market_g_per_kwh: ~\n  carbon_file:\nhardware:\n  - match: H200\n    capex: null\n" +
		"upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n    preserve_host: null\n    include_usage:\n" +
		"    tenant_header:\n    response_header_timeout:\nadmin:\n  token_file: ~\n"
	if cfg, err := Parse("nulls.yaml", []byte(nulls), -1); err != nil {
		t.Errorf("nulls that mean unset or empty: %v", err)
	} else if cfg.GPU.Interval.D() != 100*time.Millisecond || cfg.Upstreams[0].PreserveHost != nil {
		t.Errorf("nulls did not leave the defaults: %+v", cfg)
	}
}

func TestBadFiles(t *testing.T) {
	const up = "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n"
	tests := []struct {
		name     string
		yaml     string
		gpus     int
		wantLine int
		wantKey  string
		wantMsg  string
	}{
		{"unknown key", "gpu:\n  interval: 100ms\n  intervall: 1s\n", -1, 3, "gpu.intervall", `unknown key "intervall"`},
		{"unknown top key", "nodes: x\n", -1, 1, "nodes", `unknown key "nodes"`},
		{"wrong type", "facility:\n  pue: high\n", -1, 2, "facility.pue", "cannot unmarshal"},
		{"bad duration", "gpu:\n  interval: fast\n", -1, 2, "gpu.interval", `invalid duration "fast"`},
		{"negative pue", "facility:\n  pue: -1.2\n", -1, 2, "facility.pue", "cannot be below 1.0"},
		{"pue below one", "facility:\n  pue: 0.9\n", -1, 2, "facility.pue", "cannot be below 1.0"},
		// YAML's .inf and .nan decode as floats; every record would then be
		// dropped (InfluxDB takes no infinite field).
		{"infinite pue", "facility:\n  pue: .inf\n", -1, 2, "facility.pue", "finite number, got +Inf"},
		{"nan pue", "facility:\n  pue: .nan\n", -1, 2, "facility.pue", "finite number, got NaN"},
		{"infinite static watts", "host:\n  static_watts: .inf\n", -1, 2, "host.static_watts", "finite number, zero or more, got +Inf"},
		{"infinite carbon", "facility:\n  carbon_g_per_kwh: .inf\n", -1, 2, "facility.carbon_g_per_kwh", "finite number, zero or more, got +Inf"},
		{"infinite market carbon", "facility:\n  carbon_market_g_per_kwh: .inf\n", -1, 2, "facility.carbon_market_g_per_kwh", "got +Inf"},
		{"infinite capex", "hardware:\n  - match: NVIDIA H100 80GB HBM3\n    capex: .inf\n", -1, 3, "hardware[0].capex", "got +Inf"},
		{"infinite lifetime tokens", "models:\n  - name: m\n    lifetime_tokens: .inf\n", -1, 3, "models[0].lifetime_tokens", "got +Inf"},
		{"infinite prompt weight", "attribution:\n  prompt_token_weight: .inf\n", -1, 2, "attribution.prompt_token_weight", "got +Inf"},
		{"negative prompt weight", "attribution:\n  prompt_token_weight: -0.1\n", -1, 2, "attribution.prompt_token_weight", "zero or more, got -0.1"},
		{"prompt weight neither number nor auto", "attribution:\n  weighting: tokens\n  prompt_token_weight: fitted\n", -1, 3, "attribution.prompt_token_weight", `want a number or auto, got "fitted"`},
		{"prompt weight a list", "attribution:\n  prompt_token_weight: [1]\n", -1, 2, "attribution.prompt_token_weight", "want a number or auto, got a list"},
		{"prompt weight a list on the next line", "attribution:\n  prompt_token_weight:\n    - 1\n", -1, 3, "attribution.prompt_token_weight", "want a number or auto, got a list"},
		{"prompt weight a mapping on the next line", "attribution:\n  prompt_token_weight:\n    a: 1\n", -1, 3, "attribution.prompt_token_weight", "want a number or auto, got a mapping"},
		{"prompt weight in flow style", "attribution: {weighting: tokens, prompt_token_weight: fitted}\n", -1, 1, "attribution.prompt_token_weight", `got "fitted"`},
		{"prompt weight empty", "attribution:\n  weighting: tokens\n  prompt_token_weight:\n", -1, 3, "attribution.prompt_token_weight", "has no value: want a number or auto"},
		{"prompt weight null", "attribution:\n  prompt_token_weight: ~\n", -1, 2, "attribution.prompt_token_weight", "has no value"},
		// Any key that holds a value: null would leave its default in place
		// without a word.
		{"pue empty", "facility:\n  pue:\n", -1, 2, "facility.pue", "has no value: write one, or leave the key out"},
		{"interval null", "gpu:\n  interval: null\n", -1, 2, "gpu.interval", "has no value"},
		{"node empty", "node:\n", -1, 1, "node", "has no value"},
		{"upstream target empty", "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target:\n", -1, 4, "upstreams[0].target", "every upstream needs a target"},
		{"interval empty names its default", "gpu:\n  interval:\n", -1, 2, "gpu.interval", "leave the key out for its default (100ms)"},
		{"upstream body cap empty", up + "    max_body_bytes:\n", -1, 5, "upstreams[0].max_body_bytes", "has no value: write one, or leave the key out for its default (16MiB)"},
		{"null list entry in flow style", "upstreams: [~]\n", -1, 1, "upstreams[0]", "has no value"},
		{"null list entry", up + "  - ~\n", -1, 5, "upstreams[1]", "has no value"},
		{"budget empty", "proxy:\n  max_buffered_bytes:\n", -1, 2, "proxy.max_buffered_bytes", "has no value"},
		{"prompt weight empty string", "attribution:\n  prompt_token_weight: \"\"\n", -1, 2, "attribution.prompt_token_weight", `want a number or auto, got ""`},
		{"upstream without target", "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n", -1, 2, "upstreams[0].target", "needs a target"},
		{"bad target", "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: localhost:8000\n", -1, 4, "upstreams[0].target", "absolute http"},
		{"gpu missing", up + "    gpus: [0, 8]\n", 8, 5, "upstreams[0].gpus[1]", "GPU 8 does not exist: this node has 8 GPU(s)"},
		{"gpu not a number", up + "    gpus: [zero]\n", 8, 5, "upstreams[0].gpus[0]", "want a GPU index"},
		{"raw tenants without a header", up + "    tenant_header_raw: true\n", -1, 5, "upstreams[0].tenant_header_raw", "without a tenant_header"},
		{"duplicate upstream", up + "  - name: a\n    listen: 127.0.0.1:8082\n    target: http://127.0.0.1:8000\n", -1, 5, "upstreams[1].name", "used by another upstream"},
		{"negative header timeout", up + "    response_header_timeout: -1s\n", -1, 5, "upstreams[0].response_header_timeout", "zero (no limit) or more"},
		{"target is own listen", "upstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8081\n", -1, 4, "upstreams[0].target", "own upstreams[0].listen (127.0.0.1:8081): the proxy would forward to itself"},
		{"target is localhost of a wildcard listen", up + "  - name: b\n    listen: 0.0.0.0:8082\n    target: http://localhost:8082/v1\n", -1, 7, "upstreams[1].target", "own upstreams[1].listen"},
		{"target is another upstream's listen", up + "  - name: b\n    listen: \"[::]:8082\"\n    target: http://localhost:8081\n", -1, 7, "upstreams[1].target", "own upstreams[0].listen"},
		{"target is the admin listen", "admin:\n  listen: localhost:9464\n" + up[:len(up)-len("http://127.0.0.1:8000\n")] + "http://127.0.0.1:9464\n", -1, 6, "upstreams[0].target", "own admin.listen"},
		{"metrics listener is the admin listener", "admin:\n  listen: 127.0.0.1:9464\n  metrics_listen: 127.0.0.1:9464\n", -1, 3, "admin.metrics_listen", "a port of its own"},
		{"metrics listener not an address", "admin:\n  metrics_listen: metrics:9465\n", -1, 2, "admin.metrics_listen", "host must be an IP address"},
		{"kubernetes refresh too short", "kubernetes:\n  pod_resources_socket: /var/lib/kubelet/pod-resources/kubelet.sock\n  refresh: 10ms\n", -1, 3, "kubernetes.refresh", "at least 1s"},
		{"target on port 80 of a loopback listen", "upstreams:\n  - name: a\n    listen: 127.0.0.1:80\n    target: http://127.0.0.1\n", -1, 4, "upstreams[0].target", "forward to itself"},
		{"body cap above the body budget", up + "    max_body_bytes: 2MiB\nproxy:\n  max_buffered_bytes: 1MiB\n", -1, 5, "upstreams[0].max_body_bytes", "larger than proxy.max_buffered_bytes (1048576, line 7)"},
		{"no body read timeout", "proxy:\n  body_read_timeout: 0s\n", -1, 2, "proxy.body_read_timeout", "positive duration"},
		{"tiny body budget", "proxy:\n  max_buffered_bytes: 1KiB\n", -1, 2, "proxy.max_buffered_bytes", "at least 1MiB"},
		{"bad weighting", "attribution:\n  weighting: fair\n", -1, 2, "attribution.weighting", "want time, tokens or marginal"},
		{"bad currency", "facility:\n  currency: dollars\n", -1, 2, "facility.currency", "ISO 4217"},
		{"model without lifetime", "models:\n  - name: m\n    training_cost: 1e6\n", -1, 2, "models[0].lifetime_tokens", "must be positive"},
		{"new hardware incomplete", "hardware:\n  - match: MI300X\n    capex: 15000\n", -1, 2, "hardware[0]", "not in the built-in catalogue"},
		{"negative capex", "hardware:\n  - match: NVIDIA H100 80GB HBM3\n    capex: -1\n", -1, 3, "hardware[0].capex", "zero or more"},
		{"idle above tdp", "hardware:\n  - match: NVIDIA A100-SXM4-80GB\n    capex: 1\n  - match: NVIDIA H100 80GB HBM3\n    idle_watts: 900\n", -1, 5, "hardware[1].idle_watts", "must not exceed tdp_watts (700), got 900"},
		{"tdp below idle", "hardware:\n  - match: NVIDIA H100 80GB HBM3\n    tdp_watts: 50\n", -1, 3, "hardware[0].tdp_watts", "must be at least idle_watts"},
		{"bad size", "spool:\n  max_bytes: lots\n", -1, 2, "spool.max_bytes", `invalid size "lots"`},
		{"tiny batch bytes", "influx:\n  batch_bytes: 100\n", -1, 2, "influx.batch_bytes", "at least 1KiB"},
		{"tiny backoff", "influx:\n  backoff_max: 1ms\n", -1, 2, "influx.backoff_max", "at least 100ms"},
		{"influx url password hidden", "influx:\n  url: ftp://u:pw-secret@h\n", -1, 2, "influx.url", `"ftp://u:xxxxx@h"`},
		{"tiny dead letters", "spool:\n  dead_letter_max_bytes: 10\n", -1, 2, "spool.dead_letter_max_bytes", "at least 1KiB"},
		{"not a mapping", "- a\n- b\n", -1, 1, "", "must be a mapping"},
		{"syntax", "gpu: [\n", -1, 0, "", "did not find expected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml), tc.gpus)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			for _, p := range ce.Problems {
				if strings.Contains(p.Msg, tc.wantMsg) && p.Key == tc.wantKey && (tc.wantLine == 0 || p.Line == tc.wantLine) {
					if !strings.HasPrefix(p.String(), "bad.yaml:") {
						t.Errorf("problem %q does not name the file", p)
					}
					return
				}
			}
			t.Errorf("problems = %q, want line %d key %q msg containing %q", err, tc.wantLine, tc.wantKey, tc.wantMsg)
		})
	}
}

// Every problem of a file is reported, not only the first.
func TestAllProblemsReported(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("facility:\n  pue: 0.5\n  price_per_kwh: -1\ngpu:\n  interval: 1ms\n"), -1)
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("err = %v, want 3 problems", err)
	}
	if ce.Problems[0].Line != 2 || ce.Problems[2].Line != 5 {
		t.Errorf("problems not in file order: %v", ce.Problems)
	}

	// Values that parse themselves (durations, sizes, the prompt token
	// weight): each bad one, under its key, also where a list or mapping
	// begins on the line after the key.
	_, err = Parse("bad.yaml", []byte("gpu:\n  interval:\n    - 1\n  report_interval: soon\nspool:\n  max_bytes:\n    a: 1\n"+
		"attribution:\n  prompt_token_weight: much\n"), -1)
	want := []Problem{
		{File: "bad.yaml", Line: 3, Key: "gpu.interval", Msg: "want a duration, got a list"},
		{File: "bad.yaml", Line: 4, Key: "gpu.report_interval", Msg: `invalid duration "soon": want e.g. 100ms, 10s, 1h, 30d, 5y`},
		{File: "bad.yaml", Line: 7, Key: "spool.max_bytes", Msg: "want a size, got a mapping"},
		{File: "bad.yaml", Line: 9, Key: "attribution.prompt_token_weight", Msg: `want a number or auto, got "much"`},
	}
	if !errors.As(err, &ce) || !reflect.DeepEqual(ce.Problems, want) {
		t.Errorf("err = %#v, want the problems %v", err, want)
	}

	// Every kind at once, in one pass: a bad duration, an unknown key, a
	// wrong type, values out of range, a key with no value.
	_, err = Parse("bad.yaml", []byte("gpu:\n  interval: fast\n  intervall: 1s\nfacility:\n  pue: 0.5\n  price_per_kwh: cheap\n"+
		"  carbon_g_per_kwh:\nproxy:\n  budget_wait: -1s\n"), -1)
	var keys []string
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			keys = append(keys, fmt.Sprintf("%d %s", p.Line, p.Key))
		}
	}
	if want := []string{"2 gpu.interval", "3 gpu.intervall", "5 facility.pue", "6 facility.price_per_kwh", "7 facility.carbon_g_per_kwh", "9 proxy.budget_wait"}; !slices.Equal(keys, want) {
		t.Errorf("problems %v (%v), want %v", keys, err, want)
	}

	// A value reported is at its default, which the user did not write:
	// no other key is judged against it.
	for _, tc := range []struct{ yaml, key string }{
		{"gpu:\n  interval: bad\n  report_interval: 1ms\n", "gpu.interval"},
		{"proxy:\n  max_buffered_bytes: lots\nupstreams:\n  - name: a\n    listen: 127.0.0.1:8081\n    target: http://127.0.0.1:8000\n    max_body_bytes: 1GiB\n", "proxy.max_buffered_bytes"},
	} {
		_, err = Parse("bad.yaml", []byte(tc.yaml), -1)
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != tc.key {
			t.Errorf("%q: err = %v, want one problem, under %s", tc.yaml, err, tc.key)
		}
	}

	// Two keys on one line (flow style): a bad duration does not hide
	// the other key's wrong type, and each is under its own key.
	_, err = Parse("bad.yaml", []byte("gpu: {interval: bad, enabled: 5}\n"), -1)
	want = []Problem{
		{File: "bad.yaml", Line: 1, Key: "gpu.interval", Msg: `invalid duration "bad": want e.g. 100ms, 10s, 1h, 30d, 5y`},
		{File: "bad.yaml", Line: 1, Key: "gpu.enabled", Msg: "cannot unmarshal !!int `5` into bool"},
	}
	if !errors.As(err, &ce) || !reflect.DeepEqual(ce.Problems, want) {
		t.Errorf("err = %v, want the problems %v", err, want)
	}
}

func TestHardwareOverride(t *testing.T) {
	cfg, err := Parse("hw.yaml", []byte("hardware:\n  - match: nvidia  h100 80gb hbm3\n    capex: 26000\n    in_service: 2024-03-01\n"+
		"  - match: AMD Instinct MI300X\n    capex: 15000\n    life: 6y\n    tdp_watts: 750\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := cfg.HardwareFor("NVIDIA H100 80GB HBM3", 0)
	if !ok || h.Capex != 26000 || h.ServerShare != 7500 || h.Life != 5*Year || h.Source != "catalogue+config" || h.Match != "H100 SXM" {
		t.Errorf("H100 = %+v, %v; want capex overridden, rest from catalogue", h, ok)
	}
	if p, _ := cfg.HardwareFor("NVIDIA H100 PCIe", 0); p.Capex == 26000 || !p.InService.IsZero() {
		t.Errorf("the H100 SXM override reached the PCIe entry: %+v", p)
	}
	m, ok := cfg.HardwareFor("AMD Instinct MI300X", 192<<30)
	if !ok || m.Capex != 15000 || m.Life != 6*Year || m.TDPWatts != 750 || m.Source != "config" {
		t.Errorf("MI300X = %+v, %v", m, ok)
	}
	if _, ok := cfg.HardwareFor("MI300X", 0); ok {
		t.Error("a part of a config entry's name matched it, want exact names only")
	}
	if _, ok := cfg.HardwareFor("Tesla T4", 0); ok {
		t.Error("T4 matched an entry, want none")
	}
}

// Every catalogue entry is complete, its names are nobody else's, and its
// embodied range holds its point value.
func TestCatalogueComplete(t *testing.T) {
	owner := map[string]string{}
	for _, h := range Catalogue() {
		if h.Capex <= 0 || h.Life <= 0 || h.TDPWatts <= 0 || h.IdleWatts <= 0 || h.EmbodiedKgCO2e <= 0 || h.IdleWatts >= h.TDPWatts || h.ServerEmbodiedKgCO2e <= 0 {
			t.Errorf("%s: incomplete or impossible entry %+v", h.Match, h)
		}
		if h.EmbodiedKgLow > h.EmbodiedKgCO2e || h.EmbodiedKgHigh < h.EmbodiedKgCO2e {
			t.Errorf("%s: embodied %v outside its range %v-%v", h.Match, h.EmbodiedKgCO2e, h.EmbodiedKgLow, h.EmbodiedKgHigh)
		}
		for _, n := range append([]string{h.Match}, h.Names...) {
			k := NormalizeGPUName(n)
			if o, dup := owner[k]; dup && o != h.Match {
				t.Errorf("%q names both %s and %s", n, o, h.Match)
			}
			owner[k] = h.Match
		}
	}
	// The derived figure of REFERENCE.md: an 8xH100 slot depreciates at about
	// USD 0.86 per hour over 5 years.
	h, _ := lookupHardware(Catalogue(), "NVIDIA H100 80GB HBM3", 80<<30)
	perHour := h.SlotCapex() / (h.Life.Hours())
	if perHour < 0.85 || perHour > 0.87 {
		t.Errorf("H100 slot depreciation = %.3f/h, want ~0.86", perHour)
	}
}

func TestParseDurationAndSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"100ms": 100 * time.Millisecond, "30d": 30 * 24 * time.Hour, "5y": 5 * Year, "5.5y": 5*Year + Year/2, "2w": 14 * 24 * time.Hour} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"1048576": 1 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, "1GB": 1e9, "10 MiB": 10 << 20} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "y", "-1", "1XB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
}

func TestInfluxToken(t *testing.T) {
	cfg := Default()
	env := map[string]string{"INFLUX_TOKEN": "user:pw"}
	if tok, err := cfg.InfluxToken(func(k string) string { return env[k] }); err != nil || tok != "user:pw" {
		t.Errorf("token from env = %q, %v", tok, err)
	}
	f := t.TempDir() + "/token"
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Influx.TokenEnv, cfg.Influx.TokenFile = "", f
	if tok, err := cfg.InfluxToken(os.Getenv); err != nil || tok != "from-file" {
		t.Errorf("token from file = %q, %v", tok, err)
	}
}

// A GPU model not in the catalogue needs capex and life, not the power
// figures: tdp_watts and idle_watts are used only by --simulate, which
// simulates catalogue GPUs. Power figures given alone are still checked.
func TestNewHardwareWithoutPower(t *testing.T) {
	cfg, err := Parse("hw.yaml", []byte("hardware:\n  - match: NVIDIA RTX 6000 Ada Generation\n    capex: 6800\n    life: 4y\n  - match: NVIDIA L4\n    capex: 2500\n    life: 4y\n    idle_watts: 16\n"), -1)
	if err != nil {
		t.Fatalf("a new GPU with capex and life: %v", err)
	}
	if h, ok := cfg.HardwareFor("NVIDIA RTX 6000 Ada Generation", 48<<30); !ok || h.Capex != 6800 || h.TDPWatts != 0 {
		t.Errorf("RTX 6000 Ada = %+v, %v", h, ok)
	}
	_, err = Parse("hw.yaml", []byte("hardware:\n  - match: MI300X\n    tdp_watts: 750\n"), -1)
	if err == nil || !strings.Contains(err.Error(), "hw.yaml:2: hardware[0]: \"MI300X\" is not in the built-in catalogue, so it must set at least capex and life") {
		t.Errorf("a new GPU without capex and life: %v", err)
	}
}

func TestSameEndpoint(t *testing.T) {
	tests := []struct {
		listen, host, port string
		want               bool
	}{
		{"127.0.0.1:8081", "127.0.0.1", "8081", true},
		{"127.0.0.1:8081", "localhost", "8081", true},
		{"127.0.0.1:8081", "0.0.0.0", "8081", true},
		{"localhost:8081", "127.0.0.1", "8081", true},
		{"localhost:8081", "::1", "8081", true},
		{"0.0.0.0:8081", "127.0.0.1", "8081", true},
		{"0.0.0.0:8081", "localhost", "8081", true},
		{"[::]:8081", "127.0.0.1", "8081", true},
		{"[::]:8081", "::1", "8081", true},
		{":8081", "localhost", "8081", true},
		{"[::1]:8081", "::1", "8081", true},
		{"10.0.0.5:8081", "10.0.0.5", "8081", true},
		{"127.0.0.1:8081", "127.0.0.1", "8000", false},
		{"127.0.0.1:8081", "::1", "8081", false}, // another family: another socket
		{"0.0.0.0:8081", "::1", "8081", false},
		{"127.0.0.1:8081", "127.0.0.2", "8081", false},
		{"127.0.0.1:8081", "10.0.0.5", "8081", false},
		{"10.0.0.5:8081", "127.0.0.1", "8081", false},
		{"127.0.0.1:0", "127.0.0.1", "0", false}, // a port chosen at start
		{"127.0.0.1:8081", "inference.internal", "8081", false},
	}
	for _, tt := range tests {
		if got := sameEndpoint(tt.listen, tt.host, tt.port); got != tt.want {
			t.Errorf("sameEndpoint(%q, %q, %q) = %v, want %v", tt.listen, tt.host, tt.port, got, tt.want)
		}
	}
}

// prompt_token_weight is auto (the default: fitted, 0.1 until the fit is
// ready) or a number that fixes it; it prints back the way it parses.
func TestPromptTokenWeight(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want TokenWeight
	}{
		{"", TokenWeight{Auto: true, Value: DefaultPromptTokenWeight}},
		{"attribution:\n  prompt_token_weight: auto\n", TokenWeight{Auto: true, Value: DefaultPromptTokenWeight}},
		{"attribution:\n  prompt_token_weight: 0.05\n", TokenWeight{Value: 0.05}},
		{"attribution:\n  prompt_token_weight: 0\n", TokenWeight{}},
	} {
		cfg, err := Parse("t.yaml", []byte(tc.yaml), -1)
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		got := cfg.Attribution.PromptTokenWeight
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.yaml, got, tc.want)
		}
		out, err := yaml.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var back TokenWeight
		if err := yaml.Unmarshal(out, &back); err != nil || back != got {
			t.Errorf("%q: printed as %q, parsed back as %+v (%v)", tc.yaml, out, back, err)
		}
	}
}

// A Duration prints in the largest unit that holds it whole, and parses
// back to itself.
func TestDurationString(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{5 * Year, "5y"}, {14 * 24 * time.Hour, "2w"}, {30 * 24 * time.Hour, "30d"}, {time.Hour, "1h"},
		{90 * time.Minute, "1h30m"}, {10 * time.Minute, "10m"}, {100 * time.Millisecond, "100ms"},
		{61 * time.Second, "1m1s"}, {0, "0s"}, {Year + time.Hour, "8761h"},
	} {
		got := Duration(c.d).String()
		if got != c.want {
			t.Errorf("%v: String() = %q, want %q", c.d, got, c.want)
		}
		if back, err := ParseDuration(got); err != nil || back != c.d {
			t.Errorf("%q parses back as %v, %v; want %v", got, back, err, c.d)
		}
	}
}

// Validate's problems name the file, as Parse's do, so that the daemon's
// own check (GPU indices against the GPUs found) prints file:line too.
func TestValidateNamesFile(t *testing.T) {
	cfg, err := Parse("node.yaml", []byte("upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    target: http://127.0.0.1:2\n    gpus: [0, 5]\n"), -1)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path() != "node.yaml" {
		t.Errorf("Path() = %q", cfg.Path())
	}
	problems := cfg.Validate(2)
	if len(problems) != 1 || problems[0].String() != "node.yaml:5: upstreams[0].gpus[1]: GPU 5 does not exist: this node has 2 GPU(s), indices 0-1" {
		t.Errorf("problems = %v", problems)
	}
}

// discover_models is on and models_refresh 10m unless written; a refresh
// below 10s is refused.
func TestDiscoverModels(t *testing.T) {
	base := "upstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    target: http://127.0.0.1:2\n"
	cfg, err := Parse("a.yaml", []byte(base), -1)
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Upstreams[0]; !u.Discovers() || u.ModelsRefresh.D() != DefaultModelsRefresh {
		t.Errorf("defaults: discovers %v, refresh %v", u.Discovers(), u.ModelsRefresh)
	}
	cfg, err = Parse("a.yaml", []byte(base+"    discover_models: false\n"), -1)
	if err != nil || cfg.Upstreams[0].Discovers() {
		t.Errorf("discover_models: false: %v, %v", err, err == nil && cfg.Upstreams[0].Discovers())
	}
	_, err = Parse("a.yaml", []byte(base+"    models_refresh: 1s\n"), -1)
	if err == nil || !strings.Contains(err.Error(), "a.yaml:5: upstreams[0].models_refresh: must be at least 10s, got 1s") {
		t.Errorf("models_refresh: 1s: %v", err)
	}
}
