// Command deadlabourd measures what every prompt served on this node costs:
// energy, carbon, water, hardware wear and training, one record per request.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
