package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testlog"
)

// spoolLines makes n distinct lines of kind k, each about size bytes.
func spoolLines(k kind, from, n, size int) []pendingLine {
	out := make([]pendingLine, n)
	for i := range out {
		l := fmt.Sprintf("m%d,k=%s f=%d,pad=%q %d", k, k, from+i, strings.Repeat("p", max(0, size-40)), 1_772_366_400_000_000_000+from+i)
		out[i] = pendingLine{line: []byte(l), kind: k, enqueued: int64(from + i)}
	}
	return out
}

func openTestSpool(t *testing.T, dir string) (*spool, spoolRecovery) {
	t.Helper()
	s, rec, err := openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s, rec
}

// writeSpool makes a spool in dir holding the given commits, and closes it.
func writeSpool(t *testing.T, dir string, commits ...[]pendingLine) {
	t.Helper()
	s, _, err := openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commits {
		if _, err := s.commit(c, 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
}

func batchLines(b spoolBatch) []string {
	out := make([]string, b.n())
	for i := range out {
		out[i] = b.line(i)
	}
	return out
}

func pendingStrings(ls []pendingLine) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = string(l.line)
	}
	return out
}

// TestSpoolOrderResolveReplay: entries come out oldest first across both
// kinds, leave only once resolved, and a reopened spool replays exactly the
// unresolved ones.
func TestSpoolOrderResolveReplay(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTestSpool(t, dir)
	var all []pendingLine
	for i := range 10 {
		k := kind(i % 2)
		all = append(all, spoolLines(k, i, 1, 60)...)
	}
	if _, err := s.commit(all, 1<<30); err != nil {
		t.Fatal(err)
	}
	b, err := s.next(4, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := batchLines(b), pendingStrings(all[:4]); fmt.Sprint(got) != fmt.Sprint(want) || !b.full {
		t.Fatalf("next(4) = %q (full %v), want %q", got, b.full, want)
	}
	// Unresolved, the same batch comes again.
	if b2, _ := s.next(4, 1<<20); fmt.Sprint(batchLines(b2)) != fmt.Sprint(batchLines(b)) {
		t.Fatalf("next again = %q, want the same batch", batchLines(b2))
	}
	s.resolve(b)
	if p, _ := s.counts(); p != [numKinds]int{3, 3} {
		t.Errorf("counts after resolving 4 of 10 = %v, want 3 and 3", p)
	}
	b, _ = s.next(100, 1<<20)
	if got, want := batchLines(b), pendingStrings(all[4:]); fmt.Sprint(got) != fmt.Sprint(want) || b.full {
		t.Fatalf("next(100) = %q (full %v), want the 6 left %q", got, b.full, want)
	}
	// The byte bound stops a batch, but never before its first line.
	if b, _ := s.next(100, 1); b.n() != 1 || !b.full {
		t.Errorf("next(100, 1 byte) = %d lines, want 1", b.n())
	}
	if _, err := s.commit(nil, 1<<30); err != nil { // deletes what was resolved
		t.Fatal(err)
	}
	s.close()

	s, rec := openTestSpool(t, dir)
	if rec.points != [numKinds]int{3, 3} {
		t.Errorf("reopened: %v points, want 3 and 3", rec.points)
	}
	b, _ = s.next(100, 1<<20)
	if got, want := batchLines(b), pendingStrings(all[4:]); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replay = %q, want %q", got, want)
	}
	// The series' highest timestamps survive too.
	want := map[string]int64{"m0,k=cost": 1_772_366_400_000_000_008, "m1,k=telemetry": 1_772_366_400_000_000_009}
	if fmt.Sprint(rec.floors) != fmt.Sprint(want) {
		t.Errorf("floors = %v, want %v", rec.floors, want)
	}

	// A series silent for more than floorHorizon before the newest is
	// forgotten at the next start.
	later := spoolLines(kindTelemetry, 0, 1, 60)
	later[0].line = []byte(fmt.Sprintf("late f=1 %d", 1_772_366_400_000_000_009+int64(floorHorizon)+2))
	if _, err := s.commit(later, 1<<30); err != nil {
		t.Fatal(err)
	}
	s.close()
	_, rec = openTestSpool(t, dir)
	if _, ok := rec.floors["m0,k=cost"]; ok || len(rec.floors) != 1 {
		t.Errorf("floors after a month: %v, want only the late series", rec.floors)
	}
}

// TestSpoolEvictionSparesInFlight: making room never deletes the batch the
// sender holds, and takes the oldest telemetry after it.
func TestSpoolEvictionSparesInFlight(t *testing.T) {
	s, _ := openTestSpool(t, t.TempDir())
	tel := spoolLines(kindTelemetry, 0, 10, 100)
	if _, err := s.commit(tel, 1<<30); err != nil {
		t.Fatal(err)
	}
	b, _ := s.next(3, 1<<20) // in flight: telemetry 0..2
	_, size := s.counts()
	res, err := s.commit(spoolLines(kindCost, 100, 2, 100), size) // room for nothing more
	if err != nil {
		t.Fatal(err)
	}
	if res.evicted[kindTelemetry] != 2 || res.added[kindCost] != 2 || res.dropped != [numKinds]int{} {
		t.Fatalf("commit = %+v, want 2 telemetry evicted for 2 records", res)
	}
	s.resolve(b)
	left, _ := s.next(100, 1<<20)
	want := append(pendingStrings(tel[5:]), pendingStrings(spoolLines(kindCost, 100, 2, 100))...)
	if fmt.Sprint(batchLines(left)) != fmt.Sprint(want) {
		t.Errorf("left %q, want telemetry 5..9 (3 and 4 evicted, 0..2 sent) and the records", batchLines(left))
	}
}

// TestSpoolCorruptEntry: an entry whose bytes changed on disk fails its
// checksum; it is skipped, counted, kept in the dead-letter file, and the
// rest is delivered.
func TestSpoolCorruptEntry(t *testing.T) {
	influx := influxtest.Start(t)
	opts := fastOptions(t, influx.URL(), influx.Bucket())
	writeSpool(t, opts.Dir, spoolLines(kindCost, 0, 20, 80))
	path := filepath.Join(opts.Dir, SpoolFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	victim := []byte("f=7,")
	i := bytes.Index(raw, victim)
	if i < 0 || bytes.Count(raw, victim) != 1 {
		t.Fatalf("entry 7 found %d times in the file", bytes.Count(raw, victim))
	}
	raw[i+2] = '9' // f=9: still line protocol, but not what was stored
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	w := newWriter(t, opts)
	closeWriter(t, w)
	if n := influx.Count(t, "m0", ""); n != 19 {
		t.Errorf("%d points delivered, want the 19 intact", n)
	}
	if n := influx.Count(t, "m0", "f = 9"); n != 1 {
		t.Errorf("the corrupt entry was sent (f=9 stored %d times, want only the real one)", n)
	}
	if st := w.Stats(); st.DroppedBy["cost/corrupt"] != 1 || st.Sent != 19 {
		t.Errorf("Stats() = %+v, want 1 corrupt, 19 sent", st)
	}
	dl, _ := os.ReadFile(filepath.Join(opts.Dir, DeadLetterFile))
	if !bytes.Contains(dl, []byte("checksum mismatch")) || !bytes.Contains(dl, []byte("f=9,")) {
		t.Errorf("dead-letter file lacks the corrupt entry:\n%s", dl)
	}
}

// TestSpoolTornCommit: what a crash in the middle of a commit leaves (pages
// of the unfinished transaction written past the end, a torn meta page) is
// skipped by bbolt: the spool opens with every earlier commit intact.
func TestSpoolTornCommit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tear     func(f *os.File, size int64) error
		wantLast bool // the last commit survives
	}{
		{"pages past the end", func(f *os.File, size int64) error {
			_, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 3*4096+123), size)
			return err
		}, true},
		{"newest meta page torn", func(f *os.File, _ int64) error {
			// bbolt alternates two meta pages (0 and 1); each holds its
			// transaction id at byte 64 (16 of page header, 48 into the
			// meta). Tear the newer one: the last commit is lost, the
			// older meta and every commit before it stand.
			var txid [2]uint64
			for p := range txid {
				var b [8]byte
				if _, err := f.ReadAt(b[:], int64(p)*4096+64); err != nil {
					return err
				}
				txid[p] = binary.LittleEndian.Uint64(b[:])
			}
			newer := int64(0)
			if txid[1] > txid[0] {
				newer = 1
			}
			_, err := f.WriteAt(bytes.Repeat([]byte{0xee}, 48), newer*4096+16+16)
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := spoolLines(kindCost, 0, 100, 200)
			last := spoolLines(kindCost, 100, 1, 200)
			writeSpool(t, dir, first, last)
			path := filepath.Join(dir, SpoolFile)
			fi, _ := os.Stat(path)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.tear(f, fi.Size()); err != nil {
				t.Fatal(err)
			}
			f.Close()

			s, rec := openTestSpool(t, dir)
			if rec.quarantined != "" {
				t.Fatalf("a torn commit quarantined the spool: %v", rec.reason)
			}
			b, _ := s.next(1000, 1<<30)
			want := pendingStrings(first)
			if tc.wantLast {
				want = append(want, pendingStrings(last)...)
			}
			if fmt.Sprint(batchLines(b)) != fmt.Sprint(want) || len(b.corrupt) != 0 {
				t.Errorf("after the tear: %d lines, %d corrupt; want the %d committed before it", b.n(), len(b.corrupt), len(want))
			}
		})
	}
}

// TestSpoolUnreadableFile: a spool file bbolt cannot read (both meta pages
// garbled, committed pages lost from the end: damage no crash makes, only
// a failing disk or a person) never stops the start: it is moved aside and
// reported, what can be read is kept, and the fresh spool works.
func TestSpoolUnreadableFile(t *testing.T) {
	damage := []struct {
		name string
		do   func(path string) error
	}{
		{"garbled meta pages", func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(bytes.Repeat([]byte{0xa5}, 8192), 0)
			return err
		}},
		{"committed pages lost from the end", func(path string) error {
			return os.Truncate(path, 512<<10) // the entries fill about 1.2 MiB
		}},
		{"not a spool", func(path string) error {
			return os.WriteFile(path, []byte("this is not a bbolt file, it is too short and wrong"), 0o600)
		}},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			lines := spoolLines(kindCost, 0, 3000, 400)
			writeSpool(t, dir, lines)
			if err := d.do(filepath.Join(dir, SpoolFile)); err != nil {
				t.Fatal(err)
			}

			s, rec := openTestSpool(t, dir)
			if rec.quarantined == "" || rec.reason == nil {
				t.Fatalf("recovery = %+v, want the file moved aside and why", rec)
			}
			if _, err := os.Stat(rec.quarantined); err != nil {
				t.Errorf("quarantined file: %v", err)
			}
			if rec.points[kindCost] != rec.salvaged || rec.salvaged > len(lines) {
				t.Errorf("%d points in the fresh spool, %d salvaged of %d", rec.points[kindCost], rec.salvaged, len(lines))
			}
			// What was salvaged is the oldest, intact, in order.
			b, _ := s.next(len(lines), 1<<30)
			if fmt.Sprint(batchLines(b)) != fmt.Sprint(pendingStrings(lines[:rec.salvaged])) {
				t.Errorf("salvaged lines are not the first %d written", rec.salvaged)
			}
			t.Logf("%s: salvaged %d of %d; reason: %v", d.name, rec.salvaged, len(lines), rec.reason)
			if _, err := s.commit(spoolLines(kindTelemetry, 0, 1, 50), 1<<30); err != nil {
				t.Errorf("commit to the fresh spool: %v", err)
			}
		})
	}
}

// TestSpoolCompactsWhenEmpty: a spool found empty at start whose file an
// outage grew is rewritten small, keeping the series floors.
func TestSpoolCompactsWhenEmpty(t *testing.T) {
	dir := t.TempDir()
	s, _, err := openSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	const compactSize = 4 << 20
	for i := range 6 {
		if _, err := s.commit(spoolLines(kindTelemetry, i*1000, 1000, 1000), 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	for {
		b, _ := s.next(10_000, 1<<30)
		if b.last == 0 {
			break
		}
		s.resolve(b)
	}
	s.commit(nil, 1<<30)
	s.close()
	path := filepath.Join(dir, SpoolFile)
	before, _ := os.Stat(path)
	if before.Size() < compactSize {
		t.Fatalf("file is %d bytes, want more than %d for this test", before.Size(), compactSize)
	}
	s, rec, err := openSpoolWith(dir, compactSize, DefaultMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	after, _ := os.Stat(path)
	if !rec.compacted || after.Size() >= before.Size()/10 || len(rec.floors) != 1 {
		t.Errorf("compacted %v: %d -> %d bytes, floors %v", rec.compacted, before.Size(), after.Size(), rec.floors)
	}
	if _, err := s.commit(spoolLines(kindCost, 0, 1, 50), 1<<30); err != nil {
		t.Errorf("commit after compaction: %v", err)
	}
}

// A spool directory that cannot be made is an error that names it.
func TestSpoolDirError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	_, err := NewWriter(Options{Dir: filepath.Join(file, "spool")}, nil)
	if err == nil || !strings.Contains(err.Error(), "spool directory") {
		t.Errorf("NewWriter(under a file) = %v, want an error about the spool directory", err)
	}
	if errors.Is(err, ErrSpoolBusy) {
		t.Errorf("not busy: %v", err)
	}
}

// TestSpoolTruncated: a spool file cut short below bbolt's two meta pages
// (bbolt: "file size too small"), or to nothing, never stops the daemon and
// never loses data silently: it is moved aside and kept, the start logs it
// with what could be counted, the quarantine gauge says so, and a fresh
// spool takes points.
func TestSpoolTruncated(t *testing.T) {
	for _, size := range []int64{0, 4095, 4096, 6000} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			dir := t.TempDir()
			writeSpool(t, dir, spoolLines(kindCost, 0, 50, 200))
			path := filepath.Join(dir, SpoolFile)
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			logs := &testlog.Buffer{}
			w, err := NewWriter(Options{Dir: dir, FsyncInterval: time.Hour}, newTestLogger(t, logs))
			if err != nil {
				t.Fatalf("NewWriter on a spool truncated to %d bytes: %v", size, err)
			}
			if w.rec.quarantined == "" {
				t.Fatalf("recovery = %+v, want the file moved aside", w.rec)
			}
			if fi, err := os.Stat(w.rec.quarantined); err != nil || fi.Size() != size {
				t.Errorf("quarantined file: %v, %v; want it kept, %d bytes", fi, err, size)
			}
			if !strings.Contains(logs.String(), "the spool file was unreadable") ||
				!strings.Contains(logs.String(), fmt.Sprintf("file_bytes=%d", size)) {
				t.Errorf("no log line about the quarantine with the file's size:\n%s", logs)
			}
			if w.m.quarantined.Load() != 1 {
				t.Error("deadlabour_sink_spool_quarantined is not 1")
			}
			if err := w.Enqueue(requestPoints(t, records(3))...); err != nil {
				t.Fatal(err)
			}
			closeWriterNoInflux(t, w, 3)
		})
	}
}
