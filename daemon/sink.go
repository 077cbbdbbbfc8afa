package daemon

import (
	"log/slog"
	"slices"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// newWriter opens the spool and makes the sink's writer from the config.
// With no influx.url the spool only keeps: `report` reads it there.
func newWriter(cfg *config.Config, token string, log *slog.Logger) (*sink.Writer, error) {
	return sink.NewWriter(sink.Options{
		Dir:                cfg.Spool.Dir,
		MaxBytes:           int64(cfg.Spool.MaxBytes),
		FsyncInterval:      cfg.Spool.FsyncInterval.D(),
		DeadLetterMaxBytes: int64(cfg.Spool.DeadLetterMaxBytes),
		URL:                cfg.Influx.URL,
		Bucket:             cfg.Influx.Bucket,
		Org:                cfg.Influx.Org,
		Token:              token,
		BatchSize:          cfg.Influx.BatchSize,
		BatchBytes:         int64(cfg.Influx.BatchBytes),
		FlushInterval:      cfg.Influx.FlushInterval.D(),
		Timeout:            cfg.Influx.Timeout.D(),
		BackoffMax:         cfg.Influx.BackoffMax.D(),
	}, log)
}

// requestSchema is how the daemon's records become points: the model tag
// holds a model of models[] or one an upstream lists (tags), or "other";
// the currency tag is facility.currency.
func requestSchema(cfg *config.Config, tags *modelTags, log *slog.Logger) schema.RequestSchema {
	names := make([]string, len(cfg.Models))
	for i, m := range cfg.Models {
		names[i] = m.Name
	}
	discovers := slices.ContainsFunc(cfg.Upstreams, config.Upstream.Discovers)
	if len(names) == 0 && !discovers {
		log.Warn("no models configured and none discovered (discover_models: false): every record is tagged model=other, its name kept in the field model_raw; list the models served in models[] (a name is enough)")
	}
	return schema.NewRequestSchema(names, cfg.Facility.Currency).WithKnown(tags.Known)
}
