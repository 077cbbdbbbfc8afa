package audit

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/estimator"
)

// Print writes the daemon's answer about request id as `deadlabourd audit`
// shows it: the record and how it was made, or, when several records
// share the id, each of those shown, oldest first.
func Print(w io.Writer, id string, doc admin.RequestDoc) {
	if len(doc.Records) == 0 {
		printRecord(w, doc.Record, explanation(doc.RecordAnswer))
		return
	}
	fmt.Fprintf(w, "%d records share request id %s (the same X-Request-Id sent twice, or recorded again after a restart); each is its own record in InfluxDB, told apart by time.",
		doc.SameIDRecords, id)
	if len(doc.Records) < doc.SameIDRecords {
		fmt.Fprintf(w, " Showing the newest %d (--limit, at most %d).", len(doc.Records), admin.RequestShowMax)
	}
	fmt.Fprintln(w, " Oldest first:")
	first := doc.SameIDRecords - len(doc.Records) // records not shown, older than those shown
	for i, a := range doc.Records {
		t, _ := a.Record.Get("time")
		fmt.Fprintf(w, "\n=== record %d of %d, time %v ===\n", first+i+1, doc.SameIDRecords, t)
		printRecord(w, a.Record, explanation(a))
	}
}

// explanation is a's, or none.
func explanation(a admin.RecordAnswer) admin.Explanation {
	if a.Explain == nil {
		return admin.Explanation{}
	}
	return *a.Explain
}

func printRecord(w io.Writer, rec admin.OrderedJSON, ex admin.Explanation) {
	f := func(k string) string {
		v, ok := rec.Get(k)
		if !ok {
			return "-"
		}
		if x, ok := v.(float64); ok {
			return fmt.Sprintf("%.6g", x)
		}
		return fmt.Sprint(v)
	}
	fmt.Fprintf(w, "request %s: model %s, upstream %s, tenant %s, status %s, at %s\n", f("request_id"), f("model"), f("upstream"), f("tenant"), f("status"), f("time"))
	fmt.Fprintf(w, "  %s s, %s prompt + %s completion tokens (%s); GPUs %s; served %s; simulated %s; history truncated %s\n",
		f("duration_s"), f("prompt_tokens"), f("completion_tokens"), f("usage_source"), f("gpus"), f("served"), f("simulated"), f("history_truncated"))
	fmt.Fprintf(w, "  method version %s, parameters %s, weighting %s; meters: GPU %s, host %s\n",
		ex.MethodVersion, ex.ParamsHash, ex.Weighting, f("gpu_meter"), f("host_meter"))
	fmt.Fprintf(w, "energy (J): GPU %s + host %s + static %s = IT %s; facility %s\n",
		f("gpu_energy_j"), f("host_energy_j"), f("static_energy_j"), f("it_energy_j"), f("facility_energy_j"))
	fmt.Fprintf(w, "carbon (g): operational %s, market-based %s, embodied %s, training %s; water (L): %s on-site + %s off-site\n",
		f("co2e_g"), f("co2e_market_g"), f("embodied_co2e_g"), f("training_co2e_g"), f("water_onsite_l"), f("water_offsite_l"))
	fmt.Fprintf(w, "money: energy %s + depreciation %s + training %s = dead labour %s; living labour %s s\n",
		f("energy_cost"), f("depreciation_cost"), f("training_cost"), f("dead_labour_cost"), f("living_labour_s"))
	fmt.Fprintf(w, "loaded (with the idle share, uplift %s): GPU %s J, IT %s J, facility %s J, CO2e %s g, depreciation %s, dead labour %s\n",
		f("idle_uplift"), f("loaded_gpu_energy_j"), f("loaded_it_energy_j"), f("loaded_facility_energy_j"), f("loaded_co2e_g"),
		f("loaded_depreciation_cost"), f("loaded_dead_labour_cost"))
	for _, d := range ex.Devices {
		fmt.Fprintf(w, "\ndevice %s: %.6g J", d.Device, d.Joules)
		if d.StaticJoules > 0 {
			fmt.Fprintf(w, " + %.6g J static", d.StaticJoules)
		}
		fmt.Fprintf(w, ", depreciation %.6g, embodied %.6g g, meter %s", d.Depreciation, d.EmbodiedG, d.Meter)
		if d.ChargedFrom != "" {
			fmt.Fprintf(w, ", charged from %s", d.ChargedFrom)
		}
		if d.ChargedTo != "" {
			fmt.Fprintf(w, ", charged to %s", d.ChargedTo)
		}
		if d.WearEnded {
			fmt.Fprint(w, ", past its service life (no wear charged from then)")
		}
		fmt.Fprintf(w, "\n  loaded (each interval's charge / the part some request covered): %.6g J, depreciation %.6g, embodied %.6g g\n",
			d.Loaded.Joules+d.Loaded.StaticJoules, d.Loaded.Depreciation, d.Loaded.EmbodiedG)
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
		tokens := ex.Weighting == estimator.WeightTokens
		head := "  START\tEND\tINTERVAL J\tMETER\tCOVERED\tOVERLAP S\tWEIGHT\tSUM WEIGHTS\tSHARE\tCHARGED J\tLOADED J\tgCO2e/kWh\tPRICE/kWh\t"
		if tokens {
			head += "PROMPT WEIGHT\t"
		}
		fmt.Fprintln(tw, head)
		for _, c := range d.Intervals {
			fmt.Fprintf(tw, "  %s\t%s\t%.6g\t%s\t%.4g\t%.4g\t%.6g\t%.6g\t%.4g\t%.6g\t%.6g\t%.4g\t%.4g\t", clockOf(c.Start), clockOf(c.End),
				c.Joules, c.Meter, c.Covered, c.OverlapS, c.Weight, c.SumWeight, c.Share, c.Charged, c.ChargedLoaded, c.Carbon, c.Price)
			if tokens {
				fmt.Fprintf(tw, "%.4g %s\t", c.PromptWeight, c.PromptWeightSource)
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nrecomputed from the intervals above: GPU %v J, host %v J, static %v J, depreciation %v\n",
		get(ex.Recomputed, "gpu_energy_j"), get(ex.Recomputed, "host_energy_j"), get(ex.Recomputed, "static_energy_j"), get(ex.Recomputed, "depreciation_cost"))
	if ex.Matches {
		fmt.Fprintf(w, "matches the record (largest relative difference %.3g)\n", ex.MaxRelDiff)
	} else {
		fmt.Fprintf(w, "DOES NOT match the record (largest relative difference %.3g): %s\n", ex.MaxRelDiff, ex.Note)
	}
	fmt.Fprintln(w, "\nparameters:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, p := range ex.Parameters {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Name, p.Value, p.Source)
	}
	tw.Flush()
}

func clockOf(s string) string {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.Format("15:04:05.000")
	}
	return s
}

func get(o admin.OrderedJSON, key string) any {
	if v, ok := o.Get(key); ok {
		return v
	}
	return "-"
}
