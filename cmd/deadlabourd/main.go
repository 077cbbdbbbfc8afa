// Command deadlabourd measures what every prompt served on this node costs:
// energy, carbon, water, hardware wear and training, one record per request.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `deadlabourd: per-prompt energy, carbon, water and dead-labour cost of GPU inference

Usage:
  deadlabourd run --config FILE [--simulate h100:8]   run the daemon in the foreground
  deadlabourd check-config FILE                       validate a config file, print every problem
  deadlabourd probe [--simulate h100:8] [--measure 60s]
                                                      list GPUs and RAPL domains and what each supports;
                                                      --measure compares each GPU's counter with its power
  deadlabourd report [--since 24h] [--until T] [--by model|tenant|gpu|node|upstream] [--format table|csv|json]
                                                      totals of energy, carbon, water and cost over a period
  deadlabourd audit [--config FILE] REQUEST_ID        show how a recent record was made, and recompute it
  deadlabourd version                                 print the version

Run 'deadlabourd COMMAND -h' for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks errors for which the usage text is the answer.
var errUsage = errors.New("usage")

// run dispatches a subcommand and returns the exit code: 0 success, 1 failure,
// 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "check-config":
		err = cmdCheckConfig(args[1:], stdout, stderr)
	case "probe":
		err = cmdProbe(ctx, args[1:], stdout, stderr)
	case "report":
		err = cmdReport(ctx, args[1:], stdout, stderr)
	case "audit":
		err = cmdAudit(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "deadlabourd", version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "deadlabourd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "deadlabourd %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "deadlabourd %s: %v\n", args[0], err)
		return 1
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
		return v
	}
	return "(unknown)"
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("deadlabourd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
