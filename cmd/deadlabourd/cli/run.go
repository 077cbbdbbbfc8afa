package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/deadlabour/deadlabour/daemon"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "[--config FILE] [--simulate h100:8] [--log-level info] [--log-format text]", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file")
	simulate := fs.String("simulate", "", "simulate GPUs with go-nvml's mock servers, e.g. h100:8 (a100, h200, b200; 1-16)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg, err := loadConfig(*cfgPath, -1)
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, *simulate, log)
	if err != nil {
		return err
	}
	daemon.TuneGC(os.Getenv)
	return d.Run(ctx)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
