package estimator

import "testing"

// Two live requests with the same ID (a client reusing its X-Request-Id)
// but their own keys are two requests: two records, each with its share.
func TestSameIDTwoKeys(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	a, b := mkSpan("dup", 0, 1, "0"), mkSpan("dup", 0.5, 1, "0")
	a.Key, b.Key = "k1", "k2"
	l.Begin(a)
	l.Begin(b)
	if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(1), Joules: 100, Method: MethodCounter}); err != nil {
		t.Fatal(err)
	}
	l.End(b)
	l.End(a)
	out := l.Settle(at(2))
	if len(out.Records) != 2 {
		t.Fatalf("got %d records, want 2", len(out.Records))
	}
	want := map[string]float64{"k1": 200.0 / 3, "k2": 100.0 / 3} // by time in the interval: 1 s and 0.5 s
	for _, r := range out.Records {
		if r.ID != "dup" {
			t.Errorf("record id = %q, want dup", r.ID)
		}
		if !near(r.GPUEnergyJ, want[r.Key]) {
			t.Errorf("%s: gpu energy = %v, want %v", r.Key, r.GPUEnergyJ, want[r.Key])
		}
		delete(want, r.Key)
	}
	if len(want) != 0 {
		t.Errorf("no record for keys %v", want)
	}
}
