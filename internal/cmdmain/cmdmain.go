// Package cmdmain is the main function of the repository's small commands
// (the demo, the bench, the scripts).
package cmdmain

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Run calls run with a context cancelled by SIGINT or SIGTERM, the command
// line's arguments (os.Args[1:]) and standard output. An error is printed
// to standard error after name and a colon, and the process exits 1.
func Run(name string, run func(ctx context.Context, args []string, out io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
