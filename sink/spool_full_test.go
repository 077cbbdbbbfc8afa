package sink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
	"github.com/deadlabour/deadlabour/schema"
)

// countLines counts the log lines at level that contain msg.
func countLines(logs *testlog.Buffer, level, msg string) int {
	n := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level="+level) && strings.Contains(l, msg) {
			n++
		}
	}
	return n
}

// enqueueSlowly enqueues pts a hundred at a time, as a loaded engine does,
// and fails the test if one Enqueue waits or fails for another reason
// than the spool's disk.
func enqueueSlowly(t *testing.T, w *Writer, pts []schema.Point) {
	t.Helper()
	for i := 0; i < len(pts); i += 100 {
		start := time.Now()
		if err := w.Enqueue(pts[i:min(i+100, len(pts))]...); err != nil && !errors.Is(err, ErrDiskFull) {
			t.Fatalf("Enqueue: %v", err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Enqueue took %v: it must never wait for the disk", d)
		}
		time.Sleep(3 * time.Millisecond)
	}
}

// checkAccounted: every point enqueued is sent, dead-lettered, dropped or
// waiting.
func checkAccounted(t *testing.T, st Stats) {
	t.Helper()
	if got := st.Sent + st.DeadLettered + st.Dropped + uint64(st.SpoolPoints); got != st.Enqueued {
		t.Errorf("sent %d + dead-lettered %d + dropped %d + waiting %d = %d, want the %d enqueued",
			st.Sent, st.DeadLettered, st.Dropped, st.SpoolPoints, got, st.Enqueued)
	}
}

// TestWriterDiskFull: the spool's file cannot grow past 1 MiB (bbolt's
// MaxSize, the stand-in for a full disk: the commit fails as with ENOSPC)
// while InfluxDB is down and records keep coming. Enqueue never waits; at
// most maxBacklogFailing bytes wait in memory and every record beyond is
// dropped and counted (disk_full); the state says disk_full; one ERROR
// line for the whole spell however many commits fail. When InfluxDB
// returns, what is spooled is delivered while the disk is still full, the
// deletions free room, what waited in memory follows, and the spell ends
// with one line: InfluxDB holds exactly the records not counted dropped.
func TestWriterDiskFull(t *testing.T) {
	s := influxtest.Start(t)
	s.Stop(t)
	opts := fastOptions(t, s.URL(), s.Bucket())
	opts.fileLimit, opts.BatchBytes, opts.spellQuiet = 1<<20, 64<<10, 2*time.Second
	logs := &testlog.Buffer{}
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	pts := requestPoints(t, records(6000)) // about 8 MB: far more than the file and the memory bound
	enqueueSlowly(t, w, pts)
	basic.WaitFor(t, "the disk_full state", 10*time.Second, func() bool { return w.Stats().Spool == SpoolDiskFull })
	basic.WaitFor(t, "ten failed commits", 10*time.Second, func() bool { return w.m.commitErrors.Load() >= 10 })

	st := w.Stats()
	w.mu.Lock()
	inMemory := w.pendingBytes
	w.mu.Unlock()
	if inMemory > maxBacklogFailing || st.Unspooled == 0 {
		t.Errorf("%d bytes (%d points) wait in memory, want some, at most %d", inMemory, st.Unspooled, maxBacklogFailing)
	}
	if st.DroppedBy["cost/disk_full"] == 0 || st.Dropped != st.DroppedBy["cost/disk_full"] || st.SpoolError == "" {
		t.Errorf("Stats() = %+v, want records dropped as disk_full only, and the commit's error", st)
	}
	checkAccounted(t, st)
	if n := countLines(logs, "ERROR", "the spool cannot commit"); n != 1 {
		t.Errorf("%d ERROR lines about the failing commits, want 1 for the spell:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "spool commit failed; points wait in memory") {
		t.Error("a line says points wait in memory, without its bound")
	}

	s.Restart(t)
	// 4,000 records in batches of 64 KiB take a few seconds, more under -race.
	deadline := time.Now().Add(time.Minute)
	for st := w.Stats(); st.SpoolPoints > 0 || st.Spool != SpoolOK; st = w.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %+v; want everything kept delivered, the spell ended", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	closeWriter(t, w)
	st = w.Stats()
	checkAccounted(t, st)
	if st.Sent == 0 || st.Sent+st.Dropped != uint64(len(pts)) {
		t.Errorf("Stats() = %+v: want every record sent or counted dropped", st)
	}
	if n := s.Count(t, schema.MeasurementRequest, ""); n != int(st.Sent) {
		t.Errorf("%d records in InfluxDB, want the %d not dropped", n, st.Sent)
	}
	if n := countLines(logs, "INFO", "the spool commits again"); n != 1 ||
		!strings.Contains(logs.String(), fmt.Sprintf("records_dropped=%d", st.Dropped)) {
		t.Errorf("%d lines ending the spell, want 1 with records_dropped=%d:\n%s", n, st.Dropped, logs)
	}
}

// TestWriterDiskFullAtClose: shut down with the disk full, InfluxDB down
// and points waiting in memory. What is on disk is kept for the next start
// and Close says how many; what is in memory is lost, counted (disk_full),
// logged as lost, and Close's error wraps ErrDiskFull: no line says kept
// for points that were not. The next start finds exactly what Close said.
func TestWriterDiskFullAtClose(t *testing.T) {
	s := influxtest.Start(t)
	s.Stop(t)
	opts := fastOptions(t, s.URL(), s.Bucket())
	opts.fileLimit, opts.BatchBytes = 512<<10, 64<<10
	logs := &testlog.Buffer{}
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	pts := requestPoints(t, records(1500))
	enqueueSlowly(t, w, pts)
	basic.WaitFor(t, "points waiting in memory on a full disk", 10*time.Second, func() bool {
		st := w.Stats()
		return st.Spool == SpoolDiskFull && st.Unspooled > 0
	})
	before := w.Stats().DroppedBy["cost/disk_full"] // beyond the memory bound
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n, err := w.Close(ctx)
	st := w.Stats()
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "lost") {
		t.Errorf("Close() = %d, %v; want an error wrapping ErrDiskFull that says points are lost", n, err)
	}
	if n == 0 || n != st.SpoolPoints || st.Unspooled != 0 || st.DroppedBy["cost/disk_full"] == 0 {
		t.Errorf("Close() = %d; Stats() = %+v; want the points on disk, the rest counted dropped", n, st)
	}
	checkAccounted(t, st)
	if !strings.Contains(logs.String(), "lost at shutdown") ||
		!strings.Contains(logs.String(), fmt.Sprintf("records_lost=%d", st.DroppedBy["cost/disk_full"]-before)) {
		t.Errorf("no log line saying how many records are lost:\n%s", logs)
	}

	w2, err := NewWriter(Options{Dir: opts.Dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := w2.Stats().SpoolPoints; got != n {
		t.Errorf("the next start finds %d points, Close said %d", got, n)
	}
	closeWriterNoInflux(t, w2, n)
}

// TestWriterSpoolAtMaxOneLinePerSpell: spool.max_bytes reached over many
// commits is one spell, as a full disk is: the state says max_bytes, every
// drop is counted (spool_full), one WARN line when it begins, one INFO line
// with the drops when the spool has had room for the quiet period.
func TestWriterSpoolAtMaxOneLinePerSpell(t *testing.T) {
	logs := &testlog.Buffer{}
	opts := Options{Dir: t.TempDir(), MaxBytes: 64 << 10, FsyncInterval: 5 * time.Millisecond, spellQuiet: 300 * time.Millisecond}
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	recs := requestPoints(t, records(400))
	for i := range 40 { // over many commits
		if err := w.Enqueue(slices.Concat(recs[i*10:i*10+10], telemetryPoints(i*10, 10))...); err != nil && !errors.Is(err, ErrSpoolFull) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	basic.WaitFor(t, "the max_bytes state", 10*time.Second, func() bool { return w.Stats().Spool == SpoolAtMax })
	st := w.Stats()
	if st.DroppedBy["cost/spool_full"] == 0 || st.DroppedBy["telemetry/spool_full"] == 0 {
		t.Errorf("Stats() = %+v, want records and telemetry dropped for spool_full", st)
	}
	checkAccounted(t, st)
	if n := countLines(logs, "WARN", "spool full (spool.max_bytes)"); n != 1 {
		t.Errorf("%d WARN lines for the spell, want 1:\n%s", n, logs)
	}

	// The sender's part, by hand: everything is delivered.
	for {
		b, err := w.spool.next(1000, 1<<30)
		if err != nil || b.last == 0 {
			break
		}
		w.spool.resolve(b)
	}
	basic.WaitFor(t, "the spell's end", 10*time.Second, func() bool { return w.Stats().Spool == SpoolOK })
	st = w.Stats()
	if n := countLines(logs, "INFO", "the spool has room again"); n != 1 ||
		!strings.Contains(logs.String(), fmt.Sprintf("records_dropped=%d telemetry_dropped=%d", st.DroppedBy["cost/spool_full"], st.DroppedBy["telemetry/spool_full"])) {
		t.Errorf("%d lines ending the spell, want 1 with its drops:\n%s", n, logs)
	}
	closeWriterNoInflux(t, w, 0)
}
