package host

import (
	"errors"
	"strings"
	"testing"

	"github.com/shirou/gopsutil/v4/cpu"
)

// TestSumTimesNoTimes: gopsutil answering no CPU times and no error is an
// error that says so, never "%!w(<nil>)" (a %w of a nil error).
func TestSumTimesNoTimes(t *testing.T) {
	_, _, err := sumTimes(nil, nil)
	if err == nil || strings.Contains(err.Error(), "%!") {
		t.Fatalf("sumTimes(nil, nil) = %v, want an error without a bad verb", err)
	}
	cause := errors.New("open /proc/stat: denied")
	if _, _, err := sumTimes(nil, cause); !errors.Is(err, cause) {
		t.Errorf("sumTimes(nil, cause) = %v, want it wrapping cause", err)
	}
	busy, total, err := sumTimes([]cpu.TimesStat{{User: 3, System: 1, Idle: 5, Iowait: 1}}, nil)
	if err != nil || busy != 4 || total != 10 {
		t.Errorf("sumTimes = %v, %v, %v; want 4, 10, nil", busy, total, err)
	}
}
