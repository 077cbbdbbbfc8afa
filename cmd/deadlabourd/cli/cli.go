package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("deadlabourd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseNoArgs parses args into fs and refuses any argument left over.
func parseNoArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// parseOneArg parses args into fs and wants exactly one argument left
// over, named what in the error.
func parseOneArg(fs *flag.FlagSet, args []string, what string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one %s, got %d arguments", errUsage, what, fs.NArg())
	}
	return nil
}
