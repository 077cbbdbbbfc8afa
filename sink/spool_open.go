// Opening the spool: counting what earlier runs left, moving an unreadable
// file aside and salvaging it, compacting an empty one.

package sink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// spoolRecovery is what opening the spool found of earlier runs.
type spoolRecovery struct {
	points [numKinds]int // entries waiting to be sent
	bytes  int64
	floors map[string]int64 // highest timestamp spooled per series
	// quarantined is where an unreadable spool file was moved ("" when
	// none), why, its size, and how many entries were salvaged from it;
	// skipped entries failed their checksum, and walked says whether the
	// salvage read the file to its end (else what it could not reach is
	// lost uncounted).
	quarantined string
	reason      error
	fileBytes   int64
	salvaged    int
	skipped     int
	walked      bool
	compacted   bool
}

// openSpool opens or creates the spool in dir. A spool file bbolt cannot
// read is moved aside (SpoolFile.corrupt-TIME), what can be read of it is
// copied into a fresh one, and the daemon starts: rec says what happened.
// A spool held by another process is ErrSpoolBusy.
func openSpool(dir string) (*spool, spoolRecovery, error) {
	return openSpoolWith(dir, compactAbove, DefaultMaxBytes)
}

// openSpoolWith is openSpool compacting an empty file above compactSize,
// for a spool bounded to maxBytes of entries.
func openSpoolWith(dir string, compactSize, maxBytes int64) (*spool, spoolRecovery, error) {
	return openSpoolLimited(dir, compactSize, maxBytes, 0)
}

// openSpoolLimited is openSpoolWith with the file's size bounded to
// fileLimit bytes (0: no bound), the tests' stand-in for a small disk.
func openSpoolLimited(dir string, compactSize, maxBytes, fileLimit int64) (*spool, spoolRecovery, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, spoolRecovery{}, fmt.Errorf("sink: spool directory: %w", err)
	}
	s := &spool{
		path: filepath.Join(dir, SpoolFile),
		opts: &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
			// Address space for the whole file at its bound (about 1.3 x
			// the entries) from the start: bbolt remaps as the file grows,
			// copying the transaction's pages out and holding readers.
			InitialMmapSize: int(min(2*maxBytes, 1<<34)), MaxSize: int(fileLimit)},
	}
	rec, err := s.open()
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, rec, fmt.Errorf("%w: %s is locked (is another deadlabourd using spool.dir?)", ErrSpoolBusy, s.path)
	case errors.Is(err, errSpoolCorrupt):
		why := err
		var size int64
		if fi, err := os.Stat(s.path); err == nil {
			size = fi.Size()
		}
		q := fmt.Sprintf("%s.corrupt-%s", s.path, time.Now().UTC().Format("20060102T150405.000000000Z"))
		if rerr := os.Rename(s.path, q); rerr != nil {
			return nil, rec, fmt.Errorf("sink: %w; moving it aside: %w", err, rerr)
		}
		if rec, err = s.open(); err != nil {
			return nil, rec, fmt.Errorf("sink: fresh spool after moving an unreadable one to %s: %w", q, err)
		}
		rec.quarantined, rec.fileBytes = q, size
		var serr error
		rec.salvaged, rec.skipped, rec.walked, serr = s.salvage(q, size)
		rec.reason = errors.Join(why, serr)
		rec.points, rec.bytes = s.counts()
	default:
		return nil, rec, fmt.Errorf("sink: open spool %s: %w", s.path, err)
	}
	if p, _ := s.counts(); p == [numKinds]int{} {
		if fi, err := os.Stat(s.path); err == nil && fi.Size() > compactSize {
			if err := s.compact(); err != nil {
				s.db.Close()
				return nil, rec, fmt.Errorf("sink: compact empty spool %s: %w", s.path, err)
			}
			rec.compacted = true
		}
	}
	return s, rec, nil
}

// open opens the file, creates the buckets and counts what waits. A panic
// or a memory fault inside bbolt (a torn or garbled file) is returned as
// errSpoolCorrupt.
func (s *spool) open() (rec spoolRecovery, err error) {
	// bbolt makes a fresh database of an empty file without a word; an
	// empty spool file is one cut short (a crash before bbolt wrote it, a
	// careless copy, a disk), so it is set aside like any unreadable one.
	if fi, err := os.Stat(s.path); err == nil && fi.Size() == 0 {
		return rec, fmt.Errorf("%w: the file is empty (0 bytes)", errSpoolCorrupt)
	}
	if err := verify(s.path, s.opts.Timeout); err != nil {
		return rec, err
	}
	var db *bolt.DB
	defer func() {
		catchCorrupt(&err, recover())
		if err != nil && db != nil {
			closeQuietly(db)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(s.path, 0o600, s.opts)
	if err != nil {
		return rec, corruptOr(err)
	}
	rec.floors = map[string]int64{}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketCost, bucketTelemetry, bucketSeries, bucketMeta, bucketJournal} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		s.seq = max(tx.Bucket(bucketMeta).Sequence(), 1)
		for k, b := range kindBuckets {
			c := tx.Bucket(b).Cursor()
			for key, v := c.First(); key != nil; key, v = c.Next() {
				rec.points[k]++
				rec.bytes += int64(len(v))
			}
			if key, _ := c.Last(); key != nil {
				s.seq = max(s.seq, binary.BigEndian.Uint64(key)+1)
			}
		}
		sb := tx.Bucket(bucketSeries)
		var newest int64
		err := sb.ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				ts := int64(binary.BigEndian.Uint64(v))
				rec.floors[string(k)] = ts
				newest = max(newest, ts)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Forget series silent for a long time, so that the bucket does
		// not grow with every tenant ever seen.
		for k, ts := range rec.floors {
			if ts < newest-int64(floorHorizon) {
				delete(rec.floors, k)
				if err := sb.Delete([]byte(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return rec, fmt.Errorf("%w: %w", errSpoolCorrupt, err)
	}
	s.db = db
	s.cmu.Lock()
	for k := range numKinds {
		s.points[k] = int64(rec.points[k])
	}
	s.bytes = rec.bytes
	s.cmu.Unlock()
	return rec, nil
}

// verify reads every page of an existing spool file through a read-only
// handle, so that damage shows here, as errSpoolCorrupt, rather than as a
// panic in the goroutine bbolt starts to rebuild its free list when it
// opens the file for writing (NoFreelistSync), which nothing could catch.
func verify(path string, timeout time.Duration) (err error) {
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return nil // none yet (or an error bbolt.Open will report)
	}
	var db *bolt.DB
	defer func() {
		catchCorrupt(&err, recover())
		if db != nil {
			closeQuietly(db)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return corruptOr(err)
	}
	var sink byte
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if len(v) > 0 {
					sink ^= v[0] ^ v[len(v)-1] // touch the value's pages
				}
				return nil
			})
		})
	})
	_ = sink
	if err != nil {
		return fmt.Errorf("%w: %w", errSpoolCorrupt, err)
	}
	return nil
}

// corruptOr marks an error of bbolt.Open as errSpoolCorrupt unless the file
// could not be reached at all: locked (ErrTimeout), or an error of the
// system (permissions, resources), which moving the file aside would not
// mend. Everything else is the file's content: bbolt's ErrInvalid,
// ErrChecksum and the like, but also plain errors such as "file size too
// small" for a file cut short below its two meta pages.
func corruptOr(err error) error {
	var pathErr *fs.PathError
	var errno syscall.Errno
	if errors.Is(err, berrors.ErrTimeout) || errors.As(err, &pathErr) || errors.As(err, &errno) {
		return err
	}
	return fmt.Errorf("%w: %w", errSpoolCorrupt, err)
}

// catchCorrupt turns a panic in bbolt, or a fault reading its memory map
// past a truncated file (with debug.SetPanicOnFault), into errSpoolCorrupt:
// call it with recover() from a deferred function.
func catchCorrupt(err *error, panicked any) {
	if panicked != nil {
		*err = fmt.Errorf("%w: %v", errSpoolCorrupt, panicked)
	}
}

// closeQuietly closes a file that may be damaged: a fault inside bbolt's
// close is not ours to report twice.
func closeQuietly(db *bolt.DB) {
	defer func() { _ = recover() }()
	db.Close()
}

// salvage copies the entries whose checksum holds from the unreadable file
// at path, of size bytes, into s, in order, up to the first one it cannot
// read. skipped counts the entries it read whose checksum failed; walked
// is whether it got to the end of the file's entries.
func (s *spool) salvage(path string, size int64) (n, skipped int, walked bool, reason error) {
	defer func() { catchCorrupt(&reason, recover()) }()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if size == 0 {
		return 0, 0, true, nil // nothing to read, nothing counted lost
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		return 0, 0, false, err
	}
	defer src.Close()
	var batch []pendingLine
	flush := func() error {
		_, err := s.commit(batch, 1<<62)
		batch = batch[:0]
		return err
	}
	err = src.View(func(tx *bolt.Tx) error {
		for k, name := range kindBuckets {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			c := b.Cursor()
			for key, v := c.First(); key != nil; key, v = c.Next() {
				enq, line, ok := decodeEntry(v)
				if !ok {
					skipped++
					continue
				}
				batch = append(batch, pendingLine{line: append([]byte(nil), line...), kind: kind(k), enqueued: enq})
				n++
				if len(batch) == 10_000 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	err = errors.Join(err, flush())
	return n, skipped, err == nil, err
}

// compact rewrites the (empty) spool into a fresh file, keeping the series
// floors, so that the file shrinks after an outage filled it.
func (s *spool) compact() error {
	tmp := s.path + ".compact"
	os.Remove(tmp)
	small := *s.opts
	small.InitialMmapSize = 0 // else bbolt grows the new file to fit it
	dst, err := bolt.Open(tmp, 0o600, &small)
	if err != nil {
		return err
	}
	if err := bolt.Compact(dst, s.db, 16<<20); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := s.db.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	s.db, err = bolt.Open(s.path, 0o600, s.opts)
	return err
}
