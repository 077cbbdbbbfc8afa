package sink

import (
	"testing"
	"time"
)

// TestJournalCommitsWithItsPoints: journal changes enqueued with points are
// in the commit that writes them, with a commit of their own without
// points; a range deletion deletes what it spans; the journal outlives the
// Writer, and a fresh Writer reads it.
func TestJournalCommitsWithItsPoints(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(Options{Dir: dir, FsyncInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string) JournalOp { return JournalOp{Key: []byte(k), Value: []byte("v" + k)} }
	if err := w.EnqueueJournaled([]JournalOp{put("a1"), put("a2"), put("b1")}); err != nil {
		t.Fatal(err)
	}
	if keys, _, _ := w.ReadJournal(); len(keys) != 0 {
		t.Fatalf("journal before the commit: %q", keys)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	if keys, _, _ := w.ReadJournal(); len(keys) != 3 {
		t.Fatalf("journal after the commit: %q, want 3 keys", keys)
	}
	if st := w.Stats(); st.SpoolPoints != 0 {
		t.Errorf("a journal-only commit counts %d points", st.SpoolPoints)
	}
	// Deleted (a range and a key) with two records: in one commit.
	ops := []JournalOp{{Key: []byte("a"), Until: []byte("b")}, {Key: []byte("b1")}, put("c1")}
	if err := w.EnqueueJournaled(ops, requestPoints(t, records(2))...); err != nil {
		t.Fatal(err)
	}
	if keys, _, _ := w.ReadJournal(); len(keys) != 3 {
		t.Fatalf("before the commit: journal %q", keys)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	keys, values, err := w.ReadJournal()
	if err != nil || len(keys) != 1 || string(keys[0]) != "c1" || string(values[0]) != "vc1" || w.Stats().SpoolPoints != 2 {
		t.Fatalf("after the commit: journal %q %q (%v), %d points; want c1 and 2 points", keys, values, err, w.Stats().SpoolPoints)
	}
	closeWriterNoInflux(t, w, 2)

	w2, err := NewWriter(Options{Dir: dir, FsyncInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if keys, _, _ := w2.ReadJournal(); len(keys) != 1 {
		t.Errorf("journal after a restart: %q", keys)
	}
	if err := w2.EnqueueJournaled([]JournalOp{{Until: []byte{0xff}}}); err != nil {
		t.Fatal(err)
	}
	closeWriterNoInflux(t, w2, 2)
	w3, err := NewWriter(Options{Dir: dir, FsyncInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if keys, _, _ := w3.ReadJournal(); len(keys) != 0 {
		t.Errorf("journal after clearing: %q", keys)
	}
	closeWriterNoInflux(t, w3, 2)
}
