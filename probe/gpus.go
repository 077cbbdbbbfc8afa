package probe

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/deadlabour/deadlabour/collector/gpu"
)

// PrintGPUs is probe's table: per GPU what it is and what it supports, and
// under a GPU in MIG mode one line per instance.
func PrintGPUs(w io.Writer, c *gpu.Collector) {
	fmt.Fprintf(w, "GPUs: %d, driver %s\n", len(c.Devices()), c.Driver())
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNAME\tUUID\tDRIVER\tENERGY COUNTER\tPOWER READING\tMIG\tMEMORY\tHEALTH")
	health := c.Health()
	for i, d := range c.Devices() {
		mig := "off"
		if d.MIG {
			mig = fmt.Sprintf("on: %d instance(s) of %d slices, split by %s", len(d.Instances), d.Slices, d.Activity)
		}
		state := "ok"
		if !health[i].Healthy {
			state = "unhealthy: " + health[i].Reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Index, d.Name, d.UUID, c.Driver(), yesNo(d.EnergyCounter),
			d.Power.Describe(), mig, gib(d.MemoryBytes), state)
		for _, in := range d.Instances {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\t\t\t%s, %d SMs\t%s\t\n", in.ID, in.Name, in.UUID, in.Profile, in.SMs, gib(in.MemoryBytes))
		}
	}
	tw.Flush()
}

func gib(b uint64) string { return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
