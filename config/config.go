// Package config holds deadlabour's configuration: the YAML schema, its
// defaults, strict decoding with line numbers, validation, and the embedded
// hardware catalogue.
package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config is the whole configuration file. Every key is documented in example.yaml.
type Config struct {
	Node        string      `yaml:"node"`
	GPU         GPU         `yaml:"gpu"`
	Host        Host        `yaml:"host"`
	Facility    Facility    `yaml:"facility"`
	Hardware    []Hardware  `yaml:"hardware"`
	Upstreams   []Upstream  `yaml:"upstreams"`
	Proxy       Proxy       `yaml:"proxy"`
	Models      []Model     `yaml:"models"`
	Attribution Attribution `yaml:"attribution"`
	Admin       Admin       `yaml:"admin"`
	Kubernetes  Kubernetes  `yaml:"kubernetes"`
	Influx      Influx      `yaml:"influx"`
	Spool       Spool       `yaml:"spool"`
	OTLP        OTLP        `yaml:"otlp"`
	Listeners   Listeners   `yaml:"listeners"`
	Forward     Forward     `yaml:"forward"`

	// lines maps a key path ("upstreams[0].target") to its line in the file.
	lines map[string]int
	// empty holds the key paths written with no value (YAML null), which
	// leave their default in place.
	empty map[string]bool
	// file is the name the configuration was parsed under.
	file string
}

// Path is the name of the file the configuration was read from ("" for
// the defaults).
func (c *Config) Path() string { return c.file }

// GPU configures the NVML poller.
type GPU struct {
	Enabled        bool     `yaml:"enabled"`
	Interval       Duration `yaml:"interval"`
	ReportInterval Duration `yaml:"report_interval"`
	LibraryPath    string   `yaml:"library_path"`
	// ProcessRefresh is how often upstreams with pid_file or process_name
	// are matched again against NVML's compute processes.
	ProcessRefresh Duration `yaml:"process_refresh"`
}

// Host configures the host (CPU, DRAM, chassis) meter.
type Host struct {
	StaticWatts  float64 `yaml:"static_watts"`
	RAPL         bool    `yaml:"rapl"`
	SysfsRoot    string  `yaml:"sysfs_root"`
	CPUTDPWatts  float64 `yaml:"cpu_tdp_watts"`
	CPUIdleWatts float64 `yaml:"cpu_idle_watts"`
}

// Facility holds the data-centre factors applied to IT energy.
type Facility struct {
	// Region is an ISO 3166-1 code (FR, FRA) whose row of the embedded
	// regional table (regions.csv) replaces the defaults of
	// carbon_g_per_kwh and water_offsite_l_per_kwh where the file does
	// not write them; empty: none (world defaults, with a warning).
	Region              string   `yaml:"region"`
	PUE                 float64  `yaml:"pue"`
	WUEOnsiteLPerKWh    float64  `yaml:"wue_onsite_l_per_kwh"`
	WaterOffsiteLPerKWh float64  `yaml:"water_offsite_l_per_kwh"`
	CarbonGPerKWh       float64  `yaml:"carbon_g_per_kwh"`
	CarbonFile          string   `yaml:"carbon_file"`
	PricePerKWh         float64  `yaml:"price_per_kwh"`
	Currency            string   `yaml:"currency"`
	HostCapex           float64  `yaml:"host_capex"`
	HostLife            Duration `yaml:"host_life"`
	HostEmbodiedKgCO2e  float64  `yaml:"host_embodied_kg_co2e"`
	// HostInService is the day the host went into service; zero: unknown.
	HostInService Date `yaml:"host_in_service"`

	// CarbonColumn and CarbonMarketColumn name carbon_file's columns.
	CarbonColumn       string `yaml:"carbon_column"`
	CarbonMarketColumn string `yaml:"carbon_market_column"`
	// CarbonMarketGPerKWh is a static market-based intensity; nil: none.
	CarbonMarketGPerKWh *float64 `yaml:"carbon_market_g_per_kwh"`
	// PriceSchedule: time-of-use prices in PriceTimezone's local time.
	PriceTimezone string        `yaml:"price_timezone"`
	PriceSchedule []PriceWindow `yaml:"price_schedule"`
}

// Hardware is one GPU model's economic and physical figures. In the config
// file an entry overrides the catalogue entry that match names (one of its
// NVML product names; keys left out keep the catalogue's values), or adds a
// GPU model matched exactly by that name (config/catalogue.go: the rule).
type Hardware struct {
	Match string `yaml:"match"`
	// MemoryGB tells apart entries that share an NVML name (nil: any).
	MemoryGB             *float64  `yaml:"memory_gb"`
	Capex                *float64  `yaml:"capex"`
	ServerShare          *float64  `yaml:"server_share"`
	FacilityShare        *float64  `yaml:"facility_share"`
	Life                 *Duration `yaml:"life"`
	EmbodiedKgCO2e       *float64  `yaml:"embodied_kg_co2e"`
	ServerEmbodiedKgCO2e *float64  `yaml:"server_embodied_kg_co2e"`
	TDPWatts             *float64  `yaml:"tdp_watts"`
	IdleWatts            *float64  `yaml:"idle_watts"`
	// InService is the day the GPUs went into service; with life, the day
	// their wear is paid off. Zero: unknown.
	InService Date `yaml:"in_service"`
}

// Upstream is one inference server behind the metering proxy.
type Upstream struct {
	Name         string   `yaml:"name"`
	Listen       string   `yaml:"listen"`
	Target       string   `yaml:"target"`
	GPUs         []string `yaml:"gpus"`
	TenantHeader string   `yaml:"tenant_header"`
	// TenantHeaderRaw keeps tenant_header values that look like a name as
	// they are; by default they are hashed like API keys.
	TenantHeaderRaw bool     `yaml:"tenant_header_raw"`
	MaxBodyBytes    ByteSize `yaml:"max_body_bytes"`
	IncludeUsage    *bool    `yaml:"include_usage"`
	// PreserveHost: the upstream sees the client's Host (true) or the
	// target's (false); unset, the client's for an http target on an IP
	// literal or localhost, the target's otherwise.
	PreserveHost *bool  `yaml:"preserve_host"`
	PIDFile      string `yaml:"pid_file"`
	ProcessName  string `yaml:"process_name"`
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers once the request is sent (answered 504); 0: no bound.
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	// DiscoverModels makes the model names the upstream lists (GET
	// /v1/models, or Ollama's /api/tags) model tags like models[], read at
	// start and every ModelsRefresh; nil (the default): on.
	DiscoverModels *bool    `yaml:"discover_models"`
	ModelsRefresh  Duration `yaml:"models_refresh"`
}

// DefaultModelsRefresh is upstreams[].models_refresh unless written.
const DefaultModelsRefresh = 10 * time.Minute

// Discovers reports whether the daemon asks u for the models it serves
// (discover_models, on unless written false).
func (u Upstream) Discovers() bool { return u.DiscoverModels == nil || *u.DiscoverModels }

// Proxy holds what all the upstreams' proxies share.
type Proxy struct {
	// MaxBufferedBytes bounds the metered request bodies held in memory
	// at once, all upstreams together.
	MaxBufferedBytes ByteSize `yaml:"max_buffered_bytes"`
	// BodyReadTimeout bounds reading one metered request's body once room
	// for it is held (answered 408).
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// BudgetWait is how long a request waits for room in the budget
	// before it is answered 503.
	BudgetWait Duration `yaml:"budget_wait"`
}

// Model holds the amortised training figures of one model.
type Model struct {
	Name              string  `yaml:"name"`
	TrainingCost      float64 `yaml:"training_cost"`
	TrainingCO2eKg    float64 `yaml:"training_co2e_kg"`
	TrainingEnergyKWh float64 `yaml:"training_energy_kwh"`
	LifetimeTokens    float64 `yaml:"lifetime_tokens"`
	HumanLabourHours  float64 `yaml:"human_labour_hours"`
}

// Attribution configures how meter intervals are split among requests.
type Attribution struct {
	Weighting         string      `yaml:"weighting"`
	PromptTokenWeight TokenWeight `yaml:"prompt_token_weight"`
	// IdleWindow is ignored since method version 4 (the loaded figures no
	// longer use a trailing window); accepted so that old files still load.
	//
	// Deprecated: DeprecationWarnings names it where a file writes it.
	IdleWindow       Duration `yaml:"idle_window"`
	SettleDelay      Duration `yaml:"settle_delay"`
	History          Duration `yaml:"history"`
	TenantSecretFile string   `yaml:"tenant_secret_file"`

	Marginal Marginal `yaml:"marginal"`
	// AuditRecords recent records (and AuditWindow of how intervals were
	// split) are kept for GET /v1/requests/{id} and deadlabourd audit.
	AuditRecords int      `yaml:"audit_records"`
	AuditWindow  Duration `yaml:"audit_window"`
}

// Marginal holds the linear cost model of the marginal weighting: J per
// prompt and per completion token on a GPU. Both zero: fitted from the
// node's own history, with exponential forgetting over FitWindow.
type Marginal struct {
	PromptJPerToken float64  `yaml:"prompt_j_per_token"`
	DecodeJPerToken float64  `yaml:"decode_j_per_token"`
	FitWindow       Duration `yaml:"fit_window"`
}

// Admin configures the loopback admin/event API listener.
type Admin struct {
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"`
	// MetricsListen is a second listener serving only /metrics, /healthz
	// and /readyz, without a token (for Prometheus); empty: none.
	MetricsListen string `yaml:"metrics_listen"`
	// EventTenantRaw keeps the event API's tenant values as they are; by
	// default they are hashed like API keys.
	EventTenantRaw bool `yaml:"event_tenant_raw"`
}

// Kubernetes configures the GPU-to-pod mapping from the kubelet's
// pod-resources API.
type Kubernetes struct {
	// PodResourcesSocket is the kubelet's pod-resources socket; empty: no
	// mapping.
	PodResourcesSocket string   `yaml:"pod_resources_socket"`
	Refresh            Duration `yaml:"refresh"`
}

// Influx configures the InfluxDB v2 write API (InfluxDB 1.8+, 2.x, 3.x, Cloud).
type Influx struct {
	URL           string   `yaml:"url"`
	Org           string   `yaml:"org"`
	Bucket        string   `yaml:"bucket"`
	TokenEnv      string   `yaml:"token_env"`
	TokenFile     string   `yaml:"token_file"`
	Timeout       Duration `yaml:"timeout"`
	BatchSize     int      `yaml:"batch_size"`
	BatchBytes    ByteSize `yaml:"batch_bytes"`
	FlushInterval Duration `yaml:"flush_interval"`
	BackoffMax    Duration `yaml:"backoff_max"`
}

// Spool configures the durable on-disk queue in front of InfluxDB.
type Spool struct {
	Dir                string   `yaml:"dir"`
	MaxBytes           ByteSize `yaml:"max_bytes"`
	FsyncInterval      Duration `yaml:"fsync_interval"`
	DeadLetterMaxBytes ByteSize `yaml:"dead_letter_max_bytes"`
}

// Weighting modes.
const (
	WeightTime     = "time"
	WeightTokens   = "tokens"
	WeightMarginal = "marginal"
)

// Default returns the configuration used for every key the file leaves out.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Node: host,
		GPU: GPU{
			Enabled:        true,
			Interval:       Duration(100 * time.Millisecond),
			ReportInterval: Duration(10 * time.Second),
			ProcessRefresh: Duration(5 * time.Second),
		},
		Host: Host{
			StaticWatts:  150,
			RAPL:         true,
			SysfsRoot:    "/sys",
			CPUTDPWatts:  0, // from the CPU catalogue, else DefaultCPUTDPWatts
			CPUIdleWatts: 0,
		},
		Facility: Facility{
			PUE:                 1.2,
			WUEOnsiteLPerKWh:    0.5,
			WaterOffsiteLPerKWh: 3.9,
			CarbonGPerKWh:       473,
			PricePerKWh:         0.15,
			PriceTimezone:       "UTC",
			Currency:            "USD",
			HostLife:            Duration(5 * Year),
		},
		Attribution: Attribution{
			Weighting:         WeightTokens,
			PromptTokenWeight: AutoTokenWeight(),
			Marginal:          Marginal{FitWindow: Duration(time.Hour)},
			IdleWindow:        Duration(time.Hour),
			SettleDelay:       Duration(500 * time.Millisecond),
			History:           Duration(15 * time.Minute),
			AuditRecords:      1000,
			AuditWindow:       Duration(5 * time.Minute),
		},
		Admin:      Admin{Listen: "127.0.0.1:9464"},
		Kubernetes: Kubernetes{Refresh: Duration(10 * time.Second)},
		OTLP:       defaultOTLP(),
		Proxy:      Proxy{MaxBufferedBytes: ByteSize(256 << 20), BodyReadTimeout: Duration(time.Minute), BudgetWait: Duration(5 * time.Second)},
		Influx: Influx{
			Bucket:        "deadlabour/autogen",
			TokenEnv:      "INFLUX_TOKEN",
			Timeout:       Duration(5 * time.Second),
			BatchSize:     5000,
			BatchBytes:    ByteSize(4 << 20),
			FlushInterval: Duration(time.Second),
			BackoffMax:    Duration(30 * time.Second),
		},
		Spool: Spool{
			Dir:                "/var/lib/deadlabour/spool",
			MaxBytes:           ByteSize(1 << 30),
			FsyncInterval:      Duration(200 * time.Millisecond),
			DeadLetterMaxBytes: ByteSize(64 << 20),
		},
		Listeners: DefaultListeners(),
	}
}

// deprecatedKeys are keys still accepted but ignored, with what to say.
var deprecatedKeys = []struct{ key, why string }{
	{"attribution.idle_window", "is ignored since method version 4 (the loaded figures no longer use a trailing window): remove it"},
}

// DeprecationWarnings names every key the file writes that is accepted but
// ignored, with its line: "config.yaml:52: attribution.idle_window is
// ignored since method version 4 (...)". name is the file's name.
func (c *Config) DeprecationWarnings(name string) []string {
	var out []string
	for _, d := range deprecatedKeys {
		if l, ok := c.lines[d.key]; ok {
			out = append(out, Problem{File: name, Line: l, Msg: d.key + " " + d.why}.String())
		}
	}
	return out
}

var unknownRe = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

var wrongTypeRe = regexp.MustCompile("^cannot unmarshal \\S+ `(.*)` into ")

// Line returns the line of a key path in the file, or of its nearest
// ancestor that appears there; 0 if none does.
func (c *Config) Line(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// InfluxToken resolves the InfluxDB token from the environment variable or
// the file the config names; secrets never come from flags or the file itself.
func (c *Config) InfluxToken(getenv func(string) string) (string, error) {
	if c.Influx.TokenFile != "" {
		b, err := os.ReadFile(c.Influx.TokenFile)
		if err != nil {
			return "", fmt.Errorf("influx.token_file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if c.Influx.TokenEnv != "" {
		return getenv(c.Influx.TokenEnv), nil
	}
	return "", nil
}
