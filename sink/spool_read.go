// The readers of the spool: the sender's batches (next, resolve), Stats'
// oldest entry, and the scans behind GET /v1/spool and ReadSpool.

package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// spoolBatch is a run of entries handed to the sender, oldest first. Its
// lines are one newline-separated text, so that a write request (or a half
// of one) is a substring, not a copy.
type spoolBatch struct {
	last     uint64 // number of its last entry
	full     bool   // it stopped at maxN or maxBytes, not for want of entries
	body     string // the lines, separated by newlines
	start    []int  // line i is body[start[i]:end[i]]
	end      []int
	kinds    []kind
	enqueued []int64 // Unix ns
	points   [numKinds]int
	bytes    int64
	// corrupt are entries whose checksum failed: never sent, resolved
	// with the batch.
	corrupt []corruptEntry
}

// n is the number of lines (corrupt entries not counted).
func (b *spoolBatch) n() int { return len(b.start) }

func (b *spoolBatch) line(i int) string { return b.body[b.start[i]:b.end[i]] }

// text is lines [lo, hi) as one write body.
func (b *spoolBatch) text(lo, hi int) string { return b.body[b.start[lo]:b.end[hi-1]] }

type corruptEntry struct {
	seq  uint64
	kind kind
	raw  []byte
}

// next returns up to maxN of the oldest unresolved entries, stopping before
// maxBytes of lines (but at least one entry). An empty batch means nothing
// waits. The batch is in flight until resolve.
func (s *spool) next(maxN int, maxBytes int64) (b spoolBatch, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := seqKey(s.resolved.Load() + 1)
	var size int64
	var body strings.Builder
	defer func() { b.body = body.String() }()
	err = s.db.View(func(tx *bolt.Tx) error {
		var cur [numKinds]*bolt.Cursor
		var key, val [numKinds][]byte
		for k, name := range kindBuckets {
			cur[k] = tx.Bucket(name).Cursor()
			key[k], val[k] = cur[k].Seek(from)
		}
		for {
			if b.n()+len(b.corrupt) == maxN {
				b.full = true
				return nil
			}
			k, ok := older(key)
			if !ok {
				return nil
			}
			v := val[k]
			enq, line, ok := decodeEntry(v)
			if size += int64(len(line)); size > maxBytes && b.n() > 0 {
				b.full = true
				return nil
			}
			seq := binary.BigEndian.Uint64(key[k])
			b.last = seq
			b.points[k]++
			b.bytes += int64(len(v))
			if ok {
				if body.Len() > 0 {
					body.WriteByte('\n')
				} else {
					// Batches are alike: sized as the last one, the
					// body is not copied over and over as it grows.
					// No more than what waits: one line after a full
					// batch does not keep a batch's worth alive.
					body.Grow(int(min(maxBytes, s.spooledBytes(), int64(max(s.lastBody, 64<<10)))))
				}
				b.start = append(b.start, body.Len())
				body.Write(line)
				b.end = append(b.end, body.Len())
				b.kinds = append(b.kinds, k)
				b.enqueued = append(b.enqueued, enq)
			} else {
				b.corrupt = append(b.corrupt, corruptEntry{seq: seq, kind: k, raw: append([]byte(nil), v...)})
			}
			key[k], val[k] = cur[k].Next()
		}
	})
	if b.last > 0 {
		s.inflight = b.last
	}
	s.lastBody = body.Len()
	return b, err
}

// older says which cursor of the two is at the older entry; false when
// both are done.
func older(key [numKinds][]byte) (kind, bool) {
	switch {
	case key[kindCost] == nil && key[kindTelemetry] == nil:
		return 0, false
	case key[kindCost] == nil, key[kindTelemetry] != nil && bytes.Compare(key[kindTelemetry], key[kindCost]) < 0:
		return kindTelemetry, true
	}
	return kindCost, true
}

// resolve marks a batch delivered (or dead-lettered): its entries are
// deleted at the next commit.
func (s *spool) resolve(b spoolBatch) {
	if b.last == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resolved.Store(b.last)
	s.cmu.Lock()
	s.bytes -= b.bytes
	for k := range numKinds {
		s.points[k] -= int64(b.points[k])
	}
	s.cmu.Unlock()
}

// oldest returns the enqueue time of the oldest undelivered entry (zero
// when none). It reads a snapshot and never waits for a commit.
func (s *spool) oldest() (t time.Time, err error) {
	from := seqKey(s.resolved.Load() + 1)
	err = s.db.View(func(tx *bolt.Tx) error {
		var key, val [numKinds][]byte
		for k, name := range kindBuckets {
			key[k], val[k] = tx.Bucket(name).Cursor().Seek(from)
		}
		if k, ok := older(key); ok {
			if enq, _, ok := decodeEntry(val[k]); ok {
				t = time.Unix(0, enq)
			}
		}
		return nil
	})
	return t, err
}

// scan calls yield with every unresolved line, oldest first, in one read
// transaction.
func (s *spool) scan(yield func(line string) bool) error {
	return scanDB(s.db, s.resolved.Load()+1, yield)
}

func scanDB(db *bolt.DB, from uint64, yield func(line string) bool) error {
	return db.View(func(tx *bolt.Tx) error {
		var cur [numKinds]*bolt.Cursor
		var key, val [numKinds][]byte
		for k, name := range kindBuckets {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			cur[k] = b.Cursor()
			key[k], val[k] = cur[k].Seek(seqKey(from))
		}
		for {
			k, ok := older(key)
			if !ok {
				return nil
			}
			if _, line, ok := decodeEntry(val[k]); ok && !yield(string(line)) {
				return nil
			}
			key[k], val[k] = cur[k].Next()
		}
	})
}

// ReadSpool yields the lines waiting in the spool in dir, oldest first,
// exactly as they will be sent to InfluxDB (line protocol, no newline);
// records are the lines of measurement MeasurementRequest. Lines a
// daemon enqueued in its last fsync interval before it died are not there
// yet. It opens the spool read-only, and yields ErrSpoolBusy while a
// running daemon holds it: read that daemon's spool with GET /v1/spool on
// its admin listener instead.
func ReadSpool(dir string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		path := filepath.Join(dir, SpoolFile)
		if _, err := os.Stat(path); err != nil {
			yield("", fmt.Errorf("sink: read spool: %w", err))
			return
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
		if errors.Is(err, berrors.ErrTimeout) {
			yield("", fmt.Errorf("%w: %s is held by a running deadlabourd; read it with GET /v1/spool on the admin listener", ErrSpoolBusy, path))
			return
		}
		if err != nil {
			yield("", fmt.Errorf("sink: read spool %s: %w", path, err))
			return
		}
		defer db.Close()
		stopped := false
		err = scanDB(db, 1, func(line string) bool {
			if !yield(line, nil) {
				stopped = true
				return false
			}
			return true
		})
		if err != nil && !stopped {
			yield("", fmt.Errorf("sink: read spool %s: %w", path, err))
		}
	}
}
