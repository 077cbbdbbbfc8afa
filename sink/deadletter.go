package sink

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// deadLetters is the file of lines InfluxDB refused for good, and of spool
// entries whose checksum failed. It is line protocol: each refused line
// follows a comment with the time, the status and the server's message,
// so that after fixing the cause it can be written as it is
// (`influx -import`, or curl --data-binary @dead-letter.lp after removing
// the comments). Only the sender writes it; it is bounded in bytes.
type deadLetters struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

func newDeadLetters(dir string, max int64) *deadLetters {
	return &deadLetters{path: filepath.Join(dir, DeadLetterFile), max: max}
}

// write appends lines after a comment saying why, and fsyncs. It returns
// false, writing nothing, when the file would grow past its bound.
func (d *deadLetters) write(why string, lines ...string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return false, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return false, err
		}
		d.f, d.size = f, fi.Size()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.ReplaceAll(why, "\n", " "))
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if d.size+int64(b.Len()) > d.max {
		return false, nil
	}
	n, err := d.f.WriteString(b.String())
	d.size += int64(n)
	if err != nil {
		return false, err
	}
	return true, d.f.Sync()
}

func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// deadLetter keeps a line InfluxDB refused for good in the dead-letter
// file, with the server's message, and counts it.
func (w *Writer) deadLetter(b *spoolBatch, i int, o outcome) {
	k := b.kinds[i]
	why := fmt.Sprintf("status=%d error=%s", o.status, strconv.Quote(o.message))
	ok, err := w.dead.write(why, b.line(i))
	if !ok {
		w.m.dropped[k][dropDeadLetterFull].Add(1)
		w.log.Error("InfluxDB refused a line and the dead-letter file could not take it: dropped",
			"status", o.status, "error", o.message, "line", b.line(i), "dead_letter", w.dead.path, "file_err", err)
		return
	}
	before := w.spells.deadLetters.count()
	w.m.deadLettered[k].Add(1)
	w.spells.deadLetters.hit(time.Now(), before, "status", o.status, "error", o.message, "kind", k, "dead_letter", w.dead.path)
}

// deadLetterCorrupt keeps a spool entry whose checksum failed, quoted in a
// comment (it cannot be trusted as line protocol), and counts it.
func (w *Writer) deadLetterCorrupt(e corruptEntry) {
	w.m.dropped[e.kind][dropCorrupt].Add(1)
	ok, err := w.dead.write(fmt.Sprintf("corrupt spool entry %d (checksum mismatch), raw: %s", e.seq, strconv.Quote(string(e.raw))))
	w.log.Error("a spool entry failed its checksum: skipped and counted", "entry", e.seq, "kind", e.kind,
		"kept_in_dead_letter", ok, "file_err", err)
}
