package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/internal/redact"
)

var (
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)
	gpuUUIDRe  = regexp.MustCompile(`^(GPU|MIG)-[0-9a-fA-F-]+$`)
)

type validator struct {
	c        *Config
	problems []Problem
}

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.c.file, Line: v.c.Line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// nonNegative requires a finite number of zero or more: YAML's .inf and
// .nan decode as floats, and an infinite figure would make every record's
// figures infinite (InfluxDB takes none).
func (v *validator) nonNegative(key string, x float64) {
	if !finite(x) || x < 0 {
		v.add(key, "must be a finite number, zero or more, got %v", x)
	}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func (v *validator) positiveDuration(key string, d Duration) {
	if d <= 0 {
		v.add(key, "must be a positive duration, got %s", d)
	}
}

func (v *validator) listenAddr(key, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "want host:port (e.g. 127.0.0.1:8081), got %q: %v", addr, err)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add(key, "port must be 0-65535, got %q", port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		v.add(key, "host must be an IP address or localhost, got %q", host)
	}
}

func (v *validator) httpURL(key, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(key, "want an absolute http:// or https:// URL, got %q", redact.URL(raw))
	}
}

// Validate checks every value; gpuCount is the number of GPUs present, or -1
// when unknown. It returns every problem found, in file order where known.
func (c *Config) Validate(gpuCount int) []Problem {
	v := &validator{c: c}
	v.emptyValues()
	if strings.TrimSpace(c.Node) == "" {
		v.add("node", "must not be empty (default: the hostname)")
	}

	// gpu
	if c.GPU.Interval.D() < 10*time.Millisecond || c.GPU.Interval.D() > time.Minute {
		v.add("gpu.interval", "must be between 10ms and 1m, got %s", c.GPU.Interval)
	}
	if c.GPU.ReportInterval < c.GPU.Interval {
		v.add("gpu.report_interval", "must be at least gpu.interval (%s), got %s", c.GPU.Interval, c.GPU.ReportInterval)
	}
	if c.GPU.ProcessRefresh.D() < time.Second {
		v.add("gpu.process_refresh", "must be at least 1s, got %s", c.GPU.ProcessRefresh)
	}

	// host
	v.nonNegative("host.static_watts", c.Host.StaticWatts)
	v.nonNegative("host.cpu_tdp_watts", c.Host.CPUTDPWatts)
	v.nonNegative("host.cpu_idle_watts", c.Host.CPUIdleWatts)
	if c.Host.CPUTDPWatts > 0 && c.Host.CPUIdleWatts > c.Host.CPUTDPWatts {
		v.add("host.cpu_idle_watts", "must not exceed host.cpu_tdp_watts (%v), got %v", c.Host.CPUTDPWatts, c.Host.CPUIdleWatts)
	}
	if c.Host.SysfsRoot == "" {
		v.add("host.sysfs_root", "must not be empty (default /sys)")
	}

	// facility
	f := c.Facility
	switch {
	case !finite(f.PUE):
		v.add("facility.pue", "must be a finite number, got %v", f.PUE)
	case f.PUE < 1:
		v.add("facility.pue", "a PUE is total facility energy over IT energy and cannot be below 1.0, got %v", f.PUE)
	}
	if f.Region != "" {
		if _, ok := LookupRegion(f.Region); !ok {
			v.add("facility.region", "%q is not a region of the built-in table: want an ISO 3166-1 code such as FR or FRA, US or USA, DE or DEU (WOR: the world average); docs/methodology.md, \"Regional factors\", lists the %d regions; elsewhere write carbon_g_per_kwh and water_offsite_l_per_kwh",
				f.Region, len(Regions()))
		}
	}
	v.nonNegative("facility.wue_onsite_l_per_kwh", f.WUEOnsiteLPerKWh)
	v.nonNegative("facility.water_offsite_l_per_kwh", f.WaterOffsiteLPerKWh)
	v.nonNegative("facility.carbon_g_per_kwh", f.CarbonGPerKWh)
	v.nonNegative("facility.price_per_kwh", f.PricePerKWh)
	v.nonNegative("facility.host_capex", f.HostCapex)
	v.nonNegative("facility.host_embodied_kg_co2e", f.HostEmbodiedKgCO2e)
	v.positiveDuration("facility.host_life", f.HostLife)
	v.tariffs()
	if !currencyRe.MatchString(f.Currency) {
		v.add("facility.currency", "want an ISO 4217 code such as USD or EUR, got %q", f.Currency)
	}

	// hardware
	catalogue := Catalogue()
	seen := map[string]bool{}
	for i, h := range c.Hardware {
		key := fmt.Sprintf("hardware[%d]", i)
		if strings.TrimSpace(h.Match) == "" {
			v.add(key+".match", "must name the GPU as NVML reports it, e.g. \"NVIDIA H100 80GB HBM3\" (deadlabourd probe lists them)")
			continue
		}
		m := NormalizeGPUName(h.Match)
		if h.MemoryGB != nil {
			m += fmt.Sprintf(" %vGB", *h.MemoryGB)
		}
		if seen[m] {
			v.add(key+".match", "%q appears twice", h.Match)
		}
		seen[m] = true
		for _, f := range []struct {
			name string
			p    *float64
		}{
			{"capex", h.Capex}, {"server_share", h.ServerShare}, {"facility_share", h.FacilityShare},
			{"embodied_kg_co2e", h.EmbodiedKgCO2e}, {"server_embodied_kg_co2e", h.ServerEmbodiedKgCO2e},
			{"tdp_watts", h.TDPWatts}, {"idle_watts", h.IdleWatts},
		} {
			if f.p != nil {
				v.nonNegative(key+"."+f.name, *f.p)
			}
		}
		if h.MemoryGB != nil && (!finite(*h.MemoryGB) || *h.MemoryGB <= 0) {
			v.add(key+".memory_gb", "must be a positive number of GB, got %v", *h.MemoryGB)
		}
		if h.Life != nil && *h.Life <= 0 {
			v.add(key+".life", "must be a positive duration such as 5y, got %s", *h.Life)
		}
		r := resolveOverride(catalogue, h)
		if len(r.ambiguous) > 0 {
			var names []string
			for _, j := range r.ambiguous {
				names = append(names, strconv.Quote(catalogue[j].Names[0]))
			}
			v.add(key+".match", "%q is part of the names of several catalogue entries (%s): matching is exact, so write the name NVML reports for your GPUs (deadlabourd probe lists them)",
				h.Match, strings.Join(names, ", "))
			continue
		}
		// tdp_watts and idle_watts drive only the simulator, which
		// simulates catalogue GPUs: a new model needs neither.
		if len(r.targets) == 0 && (h.Life == nil || h.Capex == nil) {
			v.add(key, "%q is not in the built-in catalogue, so it must set at least capex and life (matching is exact: write the name NVML reports)", h.Match)
		}
	}
	// The entries as merged with the catalogue, checked under the index of
	// the entry that set the figure (so that the problem has its line).
	table := c.HardwareTable()
	for i, h := range c.Hardware {
		r := resolveOverride(catalogue, h)
		if len(r.ambiguous) > 0 {
			continue
		}
		var merged []HardwareSpec
		for _, j := range r.targets {
			merged = append(merged, table[j])
		}
		if len(r.targets) == 0 {
			for _, m := range table[len(catalogue):] {
				if m.Match == h.Match && (h.MemoryGB == nil || m.MemoryGB == *h.MemoryGB) {
					merged = append(merged, m)
					break
				}
			}
		}
		for _, m := range merged {
			if m.IdleWatts <= m.TDPWatts || m.TDPWatts == 0 {
				continue
			}
			if h.IdleWatts != nil {
				v.add(fmt.Sprintf("hardware[%d].idle_watts", i), "must not exceed tdp_watts (%v), got %v", m.TDPWatts, m.IdleWatts)
			} else {
				v.add(fmt.Sprintf("hardware[%d].tdp_watts", i), "must be at least idle_watts (%v), got %v", m.IdleWatts, m.TDPWatts)
			}
			break
		}
	}

	// upstreams
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		key := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case u.Name == "":
			v.add(key+".name", "every upstream needs a name")
		case !nameRe.MatchString(u.Name):
			v.add(key+".name", "use letters, digits, '.', '_' and '-', got %q", u.Name)
		case names[u.Name]:
			v.add(key+".name", "%q is used by another upstream", u.Name)
		}
		names[u.Name] = true
		if u.TenantHeaderRaw && u.TenantHeader == "" {
			v.add(key+".tenant_header_raw", "is set without a tenant_header to take tenants from")
		}
		if u.Listen == "" {
			v.add(key+".listen", "every upstream needs a listen address, e.g. 127.0.0.1:8081")
		} else {
			v.listenAddr(key+".listen", u.Listen)
		}
		if u.Target == "" {
			v.add(key+".target", "every upstream needs a target, the inference server's URL, e.g. http://127.0.0.1:8000")
		} else {
			v.httpURL(key+".target", u.Target)
		}
		for j, g := range u.GPUs {
			gk := fmt.Sprintf("%s.gpus[%d]", key, j)
			if gpuUUIDRe.MatchString(g) || IsGPUSource(g) {
				continue
			}
			n, err := strconv.Atoi(g)
			switch {
			case err != nil || n < 0:
				v.add(gk, "want a GPU index (0, 1, ...) or a UUID (GPU-...), got %q", g)
			case gpuCount >= 0 && n >= gpuCount:
				v.add(gk, "GPU %d does not exist: this node has %d GPU(s), indices 0-%d", n, gpuCount, gpuCount-1)
			}
		}
		if u.MaxBodyBytes <= 0 {
			v.add(key+".max_body_bytes", "must be positive, got %d", u.MaxBodyBytes)
		}
		if u.ResponseHeaderTimeout < 0 {
			v.add(key+".response_header_timeout", "must be zero (no limit) or more, got %s", u.ResponseHeaderTimeout)
		}
		if u.ModelsRefresh < Duration(10*time.Second) {
			v.add(key+".models_refresh", "must be at least 10s, got %s", u.ModelsRefresh)
		}
		if u.PIDFile != "" && u.ProcessName != "" {
			v.add(key+".pid_file", "set pid_file or process_name, not both")
		}
	}

	v.selfTargets()
	v.validateOTLP()
	v.validateForward()
	if c.Proxy.MaxBufferedBytes < 1<<20 {
		v.add("proxy.max_buffered_bytes", "must be at least 1MiB, got %d", c.Proxy.MaxBufferedBytes)
	}
	for i, u := range c.Upstreams {
		if u.MaxBodyBytes > c.Proxy.MaxBufferedBytes {
			v.add(fmt.Sprintf("upstreams[%d].max_body_bytes", i),
				"%d is larger than proxy.max_buffered_bytes (%d, line %d), the most request-body bytes held at once: raise proxy.max_buffered_bytes or lower max_body_bytes",
				u.MaxBodyBytes, c.Proxy.MaxBufferedBytes, v.c.Line("proxy.max_buffered_bytes"))
		}
	}
	v.positiveDuration("proxy.body_read_timeout", c.Proxy.BodyReadTimeout)
	v.positiveDuration("proxy.budget_wait", c.Proxy.BudgetWait)
	v.listeners()

	// models
	models := map[string]bool{}
	for i, m := range c.Models {
		key := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			v.add(key+".name", "every model needs a name, as the requests spell it")
		} else if models[m.Name] {
			v.add(key+".name", "%q appears twice", m.Name)
		}
		models[m.Name] = true
		v.nonNegative(key+".training_cost", m.TrainingCost)
		v.nonNegative(key+".training_co2e_kg", m.TrainingCO2eKg)
		v.nonNegative(key+".training_energy_kwh", m.TrainingEnergyKWh)
		v.nonNegative(key+".human_labour_hours", m.HumanLabourHours)
		if !finite(m.LifetimeTokens) || m.LifetimeTokens < 0 {
			v.add(key+".lifetime_tokens", "must be a finite number, zero or more, got %v", m.LifetimeTokens)
		} else if m.LifetimeTokens == 0 && (m.TrainingCost > 0 || m.TrainingCO2eKg > 0 || m.TrainingEnergyKWh > 0 || m.HumanLabourHours > 0) {
			v.add(key+".lifetime_tokens", "must be positive to spread the training figures over, e.g. 1.0e13")
		}
	}

	// attribution
	a := c.Attribution
	switch a.Weighting {
	case WeightTime, WeightTokens, WeightMarginal:
	default:
		v.add("attribution.weighting", "want time, tokens or marginal, got %q", a.Weighting)
	}
	if !c.empty[promptTokenWeightKey] && !a.PromptTokenWeight.Auto {
		v.nonNegative(promptTokenWeightKey, a.PromptTokenWeight.Value)
	}
	// attribution.idle_window is ignored since method version 4: decoded,
	// not judged (DeprecationWarnings names it).
	v.nonNegative("attribution.marginal.prompt_j_per_token", a.Marginal.PromptJPerToken)
	v.nonNegative("attribution.marginal.decode_j_per_token", a.Marginal.DecodeJPerToken)
	v.positiveDuration("attribution.marginal.fit_window", a.Marginal.FitWindow)
	if a.AuditRecords < 0 {
		v.add("attribution.audit_records", "must be zero (no audit) or more, got %d", a.AuditRecords)
	}
	if a.AuditWindow < 0 {
		v.add("attribution.audit_window", "must be zero or more, got %s", a.AuditWindow)
	}
	if a.SettleDelay < 0 {
		v.add("attribution.settle_delay", "must be zero or more, got %s", a.SettleDelay)
	}
	if a.History < Duration(time.Minute) || a.History < a.SettleDelay {
		v.add("attribution.history", "must be at least 1m and at least attribution.settle_delay, got %s", a.History)
	}

	// admin
	if c.Admin.Listen != "" {
		v.listenAddr("admin.listen", c.Admin.Listen)
	}
	if c.Admin.MetricsListen != "" {
		v.listenAddr("admin.metrics_listen", c.Admin.MetricsListen)
	}
	v.listenClashes()
	v.adminToken()

	// kubernetes
	if c.Kubernetes.PodResourcesSocket != "" && c.Kubernetes.Refresh < Duration(time.Second) {
		v.add("kubernetes.refresh", "must be at least 1s, got %s", c.Kubernetes.Refresh.D())
	}

	// influx
	if c.Influx.URL != "" {
		v.httpURL("influx.url", c.Influx.URL)
	}
	if c.Influx.Bucket == "" {
		v.add("influx.bucket", "must not be empty: a 2.x bucket, or database/retention-policy on 1.x")
	}
	v.positiveDuration("influx.timeout", c.Influx.Timeout)
	v.positiveDuration("influx.flush_interval", c.Influx.FlushInterval)
	if c.Influx.BatchSize <= 0 {
		v.add("influx.batch_size", "must be positive, got %d", c.Influx.BatchSize)
	}
	if c.Influx.BatchBytes < 1<<10 {
		v.add("influx.batch_bytes", "must be at least 1KiB, got %d", c.Influx.BatchBytes)
	}
	if c.Influx.BackoffMax < Duration(100*time.Millisecond) {
		v.add("influx.backoff_max", "must be at least 100ms, got %s", c.Influx.BackoffMax)
	}
	if c.Influx.TokenEnv != "" && c.Influx.TokenFile != "" {
		v.add("influx.token_file", "set token_env or token_file, not both")
	}

	// spool
	if c.Spool.Dir == "" {
		v.add("spool.dir", "must not be empty")
	}
	if c.Spool.MaxBytes < 1<<20 {
		v.add("spool.max_bytes", "must be at least 1MiB, got %d", c.Spool.MaxBytes)
	}
	v.positiveDuration("spool.fsync_interval", c.Spool.FsyncInterval)
	if c.Spool.DeadLetterMaxBytes < 1<<10 {
		v.add("spool.dead_letter_max_bytes", "must be at least 1KiB, got %d", c.Spool.DeadLetterMaxBytes)
	}

	sortProblems(v.problems)
	return v.problems
}

func sortProblems(ps []Problem) {
	key := func(p Problem) int {
		if p.Line == 0 {
			return 1 << 30 // unknown lines last
		}
		return p.Line
	}
	sort.SliceStable(ps, func(i, j int) bool { return key(ps[i]) < key(ps[j]) })
}

// tariffs checks the carbon-intensity file and the price schedule.
func (v *validator) tariffs() {
	f := v.c.Facility
	if f.CarbonMarketGPerKWh != nil {
		v.nonNegative("facility.carbon_market_g_per_kwh", *f.CarbonMarketGPerKWh)
		if f.CarbonMarketColumn != "" {
			v.add("facility.carbon_market_g_per_kwh", "set carbon_market_g_per_kwh or carbon_market_column, not both")
		}
	}
	if f.CarbonFile == "" {
		for key, val := range map[string]string{"facility.carbon_column": f.CarbonColumn, "facility.carbon_market_column": f.CarbonMarketColumn} {
			if val != "" {
				v.add(key, "names a column of facility.carbon_file, which is not set")
			}
		}
	} else if _, err := v.c.Intensity(); err != nil {
		v.add("facility.carbon_file", "%v", err)
	}
	if _, err := v.c.PriceZone(); err != nil {
		v.add("facility.price_timezone", "want an IANA time zone such as UTC or Europe/Berlin: %v", err)
	}
	for i, w := range f.PriceSchedule {
		_, problems := w.Parse()
		keys := make([]string, 0, len(problems))
		for k := range problems {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v.add(fmt.Sprintf("facility.price_schedule[%d].%s", i, k), "%s", problems[k])
		}
	}
}

// selfTargets refuses an upstream whose target is one of the daemon's own
// listen addresses: the proxy would forward every request to itself, an
// endless loop. A loopback or wildcard listen matches a loopback target on
// the same port.
func (v *validator) selfTargets() {
	listens := v.c.daemonListens()
	for i, u := range v.c.Upstreams {
		t, err := url.Parse(u.Target)
		if err != nil || t.Host == "" {
			continue // reported by httpURL
		}
		port := t.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[t.Scheme]
		}
		for _, l := range listens {
			if sameEndpoint(l.addr, t.Hostname(), port) {
				v.add(fmt.Sprintf("upstreams[%d].target", i), "%q is this daemon's own %s (%s): the proxy would forward to itself; point it at the inference server",
					redact.URL(u.Target), l.key, l.addr)
			}
		}
	}
}

// sameEndpoint reports whether a connection to host:port would reach a
// listener on listen: the same address; a loopback target (localhost,
// 127.x, ::1, or 0.0.0.0 and :: which connect to loopback) and a wildcard
// listen of its family (0.0.0.0 for IPv4; :: and an empty host take both)
// or a localhost listen.
func sameEndpoint(listen, host, port string) bool {
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil || lp != port || lp == "0" {
		return false
	}
	if strings.EqualFold(lh, host) {
		return true
	}
	lip, tip := net.ParseIP(lh), net.ParseIP(host)
	if tip != nil && tip.IsUnspecified() {
		if tip.To4() != nil {
			tip = net.IPv4(127, 0, 0, 1)
		} else {
			tip = net.IPv6loopback
		}
	}
	if tip == nil && !strings.EqualFold(host, "localhost") || tip != nil && !tip.IsLoopback() {
		return false // not a loopback target: only an equal listen host is the same
	}
	switch {
	case lh == "" || strings.EqualFold(lh, "localhost") || lip != nil && lip.Equal(net.IPv6unspecified):
		return true
	case lip == nil:
		return false
	case tip == nil: // localhost
		return lip.IsLoopback() || lip.IsUnspecified()
	case lip.Equal(net.IPv4zero):
		return tip.To4() != nil
	}
	return lip.Equal(tip)
}
