package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/schematest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// The models an upstream lists become model tags while the daemon runs; a
// model nobody lists is tagged other, with one log line for its name.
func TestModelDiscovery(t *testing.T) {
	fake := httptest.NewServer(fakeupstream.New(fakeupstream.Options{Models: []string{"listed-a", "configured"}}))
	defer fake.Close()
	cfg, err := config.Parse("d.yaml", []byte(fmt.Sprintf(
		"models:\n  - name: configured\nupstreams:\n  - name: a\n    listen: 127.0.0.1:0\n    target: %s\n  - name: b\n    listen: 127.0.0.1:0\n    target: %s\n    discover_models: false\n",
		fake.URL, "http://127.0.0.1:1")), -1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	tags := newModelTags(cfg, log)
	disc := newModelDiscovery(cfg, tags, log)
	if len(disc.ups) != 1 {
		t.Fatalf("discovering %d upstreams, want 1 (b has discover_models: false)", len(disc.ups))
	}
	stop := startOwned(context.Background(), disc.Run)
	defer stop()
	testutil.WaitFor(t, "the upstream's models", 5*time.Second, func() bool { return tags.Known("listed-a") })
	s := requestSchema(cfg, tags, log)
	for _, c := range []struct{ model, tag string }{
		{"listed-a", "listed-a"}, {"configured", "configured"}, {"unlisted", schema.ModelOther}, {"unlisted", schema.ModelOther},
	} {
		r := schematest.Record()
		r.Model = c.model
		p, err := s.Point(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range p.Tags {
			if tag.Key == "model" && tag.Value != c.tag {
				t.Errorf("%s: tagged %s, want %s", c.model, tag.Value, c.tag)
			}
		}
	}
	stop()
	if n := strings.Count(logs.String(), "model=unlisted"); n != 1 {
		t.Errorf("%d log lines name the unlisted model, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `models the upstream lists are tagged as named" upstream=a models=[listed-a] from="GET /v1/models"`) {
		t.Errorf("no line says which models were learnt:\n%s", logs.String())
	}
}

// The tags learnt are bounded: past MaxDiscoveredModels one line says so,
// and the names past it stay other; so do the unlisted names logged.
func TestModelTagsBounded(t *testing.T) {
	logs := &testlog.Buffer{}
	tags := newModelTags(&config.Config{}, slog.New(slog.NewTextHandler(logs, nil)))
	var names []string
	for i := range MaxDiscoveredModels + 10 {
		names = append(names, fmt.Sprintf("m%03d", i))
	}
	if added := tags.add("a", names); len(added) != MaxDiscoveredModels {
		t.Errorf("added %d, want %d", len(added), MaxDiscoveredModels)
	}
	tags.add("a", names)
	if tags.Known(names[MaxDiscoveredModels]) || !tags.Known(names[0]) {
		t.Error("the cap does not hold")
	}
	if n := strings.Count(logs.String(), "list more models than the daemon tags"); n != 1 {
		t.Errorf("%d lines about the cap, want 1", n)
	}
	for i := range maxUnlistedLogged + 10 {
		tags.Known(fmt.Sprintf("x%d", i))
	}
	// m064, asked about above, was the first of them.
	if n := strings.Count(logs.String(), "a request names a model neither"); n != maxUnlistedLogged {
		t.Errorf("%d unlisted names logged, want %d", n, maxUnlistedLogged)
	}
	if n := strings.Count(logs.String(), "their names are no longer logged"); n != 1 {
		t.Errorf("%d lines about the unlisted cap, want 1", n)
	}
}
