package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/discover"
	"github.com/deadlabour/deadlabour/internal/redact"
)

// MaxDiscoveredModels bounds the model tags learnt from the upstreams'
// lists, all upstreams together: each is a series in InfluxDB, and a
// server could list thousands (a model hub's mirror).
const MaxDiscoveredModels = 64

// maxUnlistedLogged bounds the names logged as tagged other: clients
// choose them, and could fill the log.
const maxUnlistedLogged = 256

// Discovery timing: each ask is bounded by discoverTimeout; after a failed
// one the next comes discoverRetry later, doubling up to models_refresh.
const (
	discoverTimeout = 10 * time.Second
	discoverRetry   = 5 * time.Second
)

// modelTags is the set of model names records are tagged with beyond
// models[]: those the upstreams list (discover_models). Known is the
// RequestSchema's WithKnown func: the engine and the audit ask it while
// the discovery goroutine adds names.
type modelTags struct {
	log        *slog.Logger
	configured map[string]bool

	mu       sync.RWMutex
	listed   map[string]bool
	full     bool            // the cap was reached (logged once)
	unlisted map[string]bool // names logged as tagged other
}

func newModelTags(cfg *config.Config, log *slog.Logger) *modelTags {
	t := &modelTags{log: log, configured: map[string]bool{}, listed: map[string]bool{}, unlisted: map[string]bool{}}
	for _, m := range cfg.Models {
		t.configured[m.Name] = true
	}
	return t
}

// Known reports whether an upstream listed model; the first time a name
// nobody listed is asked about, it logs that its records are tagged other.
func (t *modelTags) Known(model string) bool {
	t.mu.RLock()
	listed, logged := t.listed[model], t.unlisted[model]
	t.mu.RUnlock()
	if listed || logged {
		return listed
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.listed[model]:
		return true
	case t.unlisted[model] || len(t.unlisted) > maxUnlistedLogged:
	case len(t.unlisted) == maxUnlistedLogged:
		t.unlisted[model] = true // a marker past the cap: said once
		t.log.Warn("more models neither in models[] nor listed by an upstream are tagged other; their names are no longer logged", "logged", maxUnlistedLogged)
	default:
		t.unlisted[model] = true
		t.log.Warn("a request names a model neither in models[] nor listed by an upstream: its records are tagged model=other (the name is in model_raw); add it to models[] to tag it",
			"model", model[:min(len(model), 256)])
	}
	return false
}

// add makes names tags, up to MaxDiscoveredModels, and returns those new.
func (t *modelTags) add(upstream string, names []string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var added []string
	for _, n := range names {
		if t.configured[n] || t.listed[n] {
			continue
		}
		if len(t.listed) >= MaxDiscoveredModels {
			if !t.full {
				t.full = true
				t.log.Warn("the upstreams list more models than the daemon tags: the others are tagged other unless in models[]",
					"cap", MaxDiscoveredModels, "upstream", upstream, "first_left_out", n)
			}
			break
		}
		t.listed[n] = true
		added = append(added, n)
	}
	return added
}

// modelDiscovery asks every upstream with discover_models for its models,
// at start and every models_refresh.
type modelDiscovery struct {
	tags   *modelTags
	ups    []config.Upstream
	client *http.Client
	log    *slog.Logger
}

func newModelDiscovery(cfg *config.Config, tags *modelTags, log *slog.Logger) *modelDiscovery {
	d := &modelDiscovery{tags: tags, client: discover.UpstreamClient(discoverTimeout), log: log}
	for _, u := range cfg.Upstreams {
		if u.Discovers() {
			d.ups = append(d.ups, u)
		}
	}
	if len(d.ups) == 0 {
		return nil
	}
	return d
}

// Run asks until ctx is done.
func (m *modelDiscovery) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range m.ups {
		wg.Go(func() { m.run(ctx, u) })
	}
	wg.Wait()
	m.client.CloseIdleConnections()
}

func (m *modelDiscovery) run(ctx context.Context, u config.Upstream) {
	log := m.log.With("upstream", u.Name)
	refresh := u.ModelsRefresh.D()
	retry, failing := min(discoverRetry, refresh), false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		names, path, err := discover.Models(ctx, m.client, u.Target)
		if ctx.Err() != nil {
			return
		}
		wait := refresh
		switch {
		case err != nil:
			args := []any{"target", redact.URL(u.Target), "err", err, "retry_in", retry.String()}
			if failing {
				log.Debug("cannot list the upstream's models", args...)
			} else {
				log.Warn("cannot list the upstream's models: requests for models not in models[] are tagged other until it does (more failures are logged at debug)", args...)
			}
			failing, wait, retry = true, retry, min(retry*2, refresh)
		default:
			if failing {
				log.Info("the upstream lists its models again")
			}
			failing, retry = false, min(discoverRetry, refresh)
			if added := m.tags.add(u.Name, names); len(added) > 0 {
				slices.Sort(added)
				log.Info("models the upstream lists are tagged as named", "models", added, "from", "GET "+path)
			}
		}
		timer.Reset(wait)
	}
}
