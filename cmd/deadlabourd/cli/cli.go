package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/deadlabour/deadlabour/config"
)

const usage = `deadlabourd: per-prompt energy, carbon, water and dead-labour cost of GPU inference

Usage:
  deadlabourd init --upstream URL [--upstream URL ...] [--influx URL] [--out FILE] [--simulate h100:8]
                                                      write a minimal config from what the upstreams and GPUs say
  deadlabourd run --config FILE [--simulate h100:8]   run the daemon in the foreground
  deadlabourd check-config [--online] FILE            validate a config file, print every problem;
                                                      --online also asks each upstream and InfluxDB
  deadlabourd probe [--simulate h100:8] [--measure 60s]
                                                      list GPUs and RAPL domains and what each supports;
                                                      --measure compares each GPU's counter with its power
  deadlabourd report [--config FILE] [--since 24h] [--until T] [--by model|tenant|gpu|node|upstream|namespace|pod] [--format table|csv|json|html]
                                                      totals of energy, carbon, water and cost over a period
  deadlabourd audit [--config FILE] REQUEST_ID        show how a recent record was made, and recompute it
  deadlabourd version [--json]                        print the version, Go's, and the NVIDIA driver's and NVML's

Flags may come before or after arguments. Run 'deadlabourd COMMAND --help' for the flags of a command.
`

// errUsage marks errors for which the usage text is the answer.
var errUsage = errors.New("usage")

// Run dispatches a subcommand (args is the command line less the program
// name) and returns the exit code: 0 success, 1 failure, 2 bad usage.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = cmdInit(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "check-config":
		err = cmdCheckConfig(ctx, args[1:], stdout, stderr)
	case "probe":
		err = cmdProbe(ctx, args[1:], stdout, stderr)
	case "report":
		err = cmdReport(ctx, args[1:], stdout, stderr)
	case "audit":
		err = cmdAudit(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = cmdVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "deadlabourd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ce *config.Error
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "deadlabourd %s: %v\n", args[0], err)
		return 2
	case errors.As(err, &ce):
		// One line per problem, each with its file and line.
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "deadlabourd %s: %s\n", args[0], p)
		}
		return 1
	default:
		fmt.Fprintf(stderr, "deadlabourd %s: %v\n", args[0], err)
		return 1
	}
}

// newFlagSet is a subcommand's flag set; its help prints synopsis (the
// command's arguments and flags, after "deadlabourd NAME") and the flags.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("deadlabourd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: deadlabourd %s %s\n\nFlags (before or after the arguments):\n", name, synopsis)
		printFlags(fs)
	}
	return fs
}

// printFlags is fs.PrintDefaults with each flag written as the README and
// the usage write it, --name (Go's flag package prints -name; it takes both).
func printFlags(fs *flag.FlagSet) {
	var b strings.Builder
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "  -"); ok {
			line = "  --" + rest
		}
		fmt.Fprint(out, line)
	}
}

// parseArgs parses args into fs, flags before, between and after the
// arguments (Go's flag package stops at the first argument), and returns
// the arguments in order. Everything after "--" is an argument.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseNoArgs parses args into fs and refuses any argument.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	positional, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, positional[0])
	}
	return nil
}

// parseOneArg parses args into fs and returns the one argument they hold,
// named what in the error when there is not exactly one.
func parseOneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	positional, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(positional) != 1 {
		return "", fmt.Errorf("%w: want exactly one %s, got %d arguments", errUsage, what, len(positional))
	}
	return positional[0], nil
}

// loadConfig is config.Load, with a missing file's error naming the ways
// to make one.
func loadConfig(path string, gpuCount int) (*config.Config, error) {
	cfg, err := config.Load(path, gpuCount)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no such file: create one with `deadlabourd init --upstream URL --out %s` or copy config/example.yaml", path, path)
	}
	return cfg, err
}
