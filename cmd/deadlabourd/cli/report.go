package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/redact"
	"github.com/deadlabour/deadlabour/report"
)

func cmdReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", "[--config FILE] [--since 24h] [--until T] [--by model|tenant|gpu|node|upstream|namespace|pod] [--format table|csv|json]", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file (influx.url, bucket and token)")
	since := fs.String("since", "24h", "start: a duration before now (24h, 7d) or an RFC 3339 time")
	until := fs.String("until", "0s", "end (exclusive): like --since; default now")
	by := fs.String("by", "model", "group by model, tenant, gpu, node, upstream, namespace or pod (gpu: a request on n GPUs counts 1/n on each; records hold no per-GPU split; namespace and pod: the Kubernetes pod, keyed namespace/pod, that owned the GPUs; (none) for records without one)")
	format := fs.String("format", "table", "table, csv, json or html (one self-contained file with charts)")
	columns := fs.String("columns", "", "table columns, comma-separated field names, or all (default "+strings.Join(report.DefaultColumns, ",")+")")
	out := fs.String("out", "", "write the report to this file instead of standard output")
	simulated := fs.Bool("simulated", false, "include records written under --simulate (left out by default)")
	tokenFile := fs.String("influx-token-file", "", "read the InfluxDB token from this file instead of the config's token_env/token_file")
	lpFile := fs.String("line-protocol", "", "read records from this line-protocol file ('-': standard input) instead of InfluxDB")
	currency := fs.String("currency", "", "only records whose money is in this currency (ISO 4217, e.g. EUR): needed when nodes use several")
	timeout := fs.Duration("timeout", time.Minute, "give up on InfluxDB after this long")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if _, ok := report.Dimension(*by); !ok {
		return fmt.Errorf("%w: --by %q: want model, tenant, gpu, node or upstream, or namespace or pod", errUsage, *by)
	}
	switch *format {
	case "table", "csv", "json", "html":
	default:
		return fmt.Errorf("%w: --format %q: want table, csv, json or html", errUsage, *format)
	}
	var cols []string
	if *columns != "" {
		cols = strings.Split(*columns, ",")
		if err := report.CheckColumns(cols); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	now := time.Now()
	from, err := report.ParseWhen("since", *since, now)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	to, err := report.ParseWhen("until", *until, now)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !from.Before(to) {
		return fmt.Errorf("%w: --since %s is not before --until %s", errUsage, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}

	var src report.Source
	var cfg *config.Config // nil: the built-in hardware catalogue
	source := ""           // where the records came from, for the table's heading
	switch {
	case *lpFile != "":
		src, source = report.LineProtocolFile(*lpFile), *lpFile
		// The config only gives the hardware catalogue here: use it when
		// there is one.
		if _, err := os.Stat(*cfgPath); err == nil || flagSet(fs, "config") {
			if cfg, err = loadConfig(*cfgPath, -1); err != nil {
				return err
			}
		}
	default:
		var err error
		if cfg, err = loadConfig(*cfgPath, -1); err != nil {
			return err
		}
		if cfg.Influx.URL == "" {
			src, source = report.SpoolSource(cfg), "spool "+cfg.Spool.Dir
			break
		}
		token, err := report.Token(cfg, *tokenFile)
		if err != nil {
			return err
		}
		src, err = report.NewInfluxSource(cfg.Influx.URL, cfg.Influx.Bucket, token, *timeout)
		if err != nil {
			return err
		}
		source = redact.URL(cfg.Influx.URL) + " " + cfg.Influx.Bucket
	}
	q := report.Query{From: from, To: to, By: *by, Simulated: *simulated, Currency: *currency}
	if *format == "html" {
		q.Bucket = report.BucketFor(to.Sub(from))
	}
	data, err := src.Read(ctx, q)
	if err != nil {
		return err
	}
	if q.Currency, err = data.OneCurrency(); err != nil {
		return err
	}
	rep := report.Build(q, source, data, cfg)
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	switch *format {
	case "csv":
		err = report.WriteCSV(w, rep)
	case "json":
		err = report.WriteJSON(w, rep)
	case "html":
		err = report.WriteHTML(w, rep)
	default:
		err = report.WriteTable(w, rep, cols)
	}
	if err != nil {
		return err
	}
	if f, ok := w.(*os.File); ok && *out != "" {
		return f.Close()
	}
	return nil
}

// flagSet says whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
