package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"iter"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/deadlabour/deadlabour/schema"
)

// The spool is one bbolt file, SpoolFile in the spool directory:
//
//	bucket "cost"       records and idle shares  } key: 8-byte big-endian sequence
//	bucket "telemetry"  everything else          } number, one sequence for both
//	bucket "series"     series key -> highest timestamp ever spooled (int64 BE)
//	bucket "meta"       its bucket sequence is the next entry's number
//
// An entry is crc32c(rest) | enqueue time, Unix ns (int64 BE) | line. The
// line is stored as it is sent: replaying it writes the same point again.
const (
	// SpoolFile is the spool's file name in the spool directory.
	SpoolFile = "spool.db"
	// DeadLetterFile is where lines InfluxDB refused for good are kept, in
	// the spool directory: line protocol, each line after a comment with
	// the time, the status and the server's message.
	DeadLetterFile = "dead-letter.lp"

	entryHeader = 12
	// floorHorizon: a series with no point for this long before the newest
	// of any series is forgotten at start (see stamp.go).
	floorHorizon = 30 * 24 * time.Hour
	// compactAbove: a spool found empty at start is rewritten to a fresh
	// file when its file is larger (bbolt never shrinks a file itself).
	compactAbove = 64 << 20
)

var (
	bucketCost      = []byte("cost")
	bucketTelemetry = []byte("telemetry")
	bucketSeries    = []byte("series")
	bucketMeta      = []byte("meta")
	kindBuckets     = [numKinds][]byte{bucketCost, bucketTelemetry}

	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	// ErrSpoolBusy: another process holds the spool (a running daemon).
	ErrSpoolBusy = errors.New("sink: spool in use by another process")
	// errSpoolCorrupt marks a spool file bbolt could not read.
	errSpoolCorrupt = errors.New("spool file unreadable")
)

// kind is what a line is worth when the spool must drop something: cost
// lines (records and idle shares, the ledger) go last.
type kind uint8

const (
	kindCost kind = iota
	kindTelemetry
	numKinds
)

func (k kind) String() string {
	if k == kindCost {
		return "cost"
	}
	return "telemetry"
}

// kindOf classes a point by its measurement.
func kindOf(measurement string) kind {
	if measurement == schema.MeasurementRequest || measurement == schema.MeasurementIdle {
		return kindCost
	}
	return kindTelemetry
}

func entrySize(line []byte) int64 { return int64(len(line)) + entryHeader }

func appendEntry(dst []byte, enqueued int64, line []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(enqueued))
	dst = append(dst, line...)
	binary.BigEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// decodeEntry checks an entry's checksum and returns its parts; ok is
// false for a corrupt entry.
func decodeEntry(v []byte) (enqueued int64, line []byte, ok bool) {
	if len(v) < entryHeader || binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(v[4:])), v[entryHeader:], true
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// pendingLine is a line enqueued but not yet committed to the spool.
type pendingLine struct {
	line     []byte
	kind     kind
	enqueued int64 // Unix ns
}

// spool is the durable queue between Enqueue and InfluxDB. One goroutine
// commits (appends and deletes), one sends (next and resolve).
type spool struct {
	path string
	opts *bolt.Options

	db      *bolt.DB
	seq     uint64 // the next entry's number (the committer's)
	deleted uint64 // entries up to this one are deleted from the file (the committer's)

	mu       sync.Mutex // held by next, resolve, and a commit that makes room
	inflight uint64     // the last entry handed to the sender
	lastBody int        // the length of the last batch's body (under mu): the next one's size hint

	// Read without mu, so that Enqueue and Stats never wait for an fsync.
	resolved atomic.Uint64 // entries up to this one are delivered or dead-lettered

	// The counters, under cmu, which is never held across I/O. Every
	// change of a line's place (staged for a commit, spooled, resolved)
	// moves its point and its bytes together under cmu, so that a reader
	// sees each waiting line exactly once and never bytes without points.
	cmu         sync.Mutex
	points      [numKinds]int64 // undelivered entries in the file
	bytes       int64           // their entry bytes
	staged      [numKinds]int64 // lines handed to the commit in progress
	stagedBytes int64
}

// spoolRecovery is what opening the spool found of earlier runs.
type spoolRecovery struct {
	points [numKinds]int // entries waiting to be sent
	bytes  int64
	floors map[string]int64 // highest timestamp spooled per series
	// quarantined is where an unreadable spool file was moved ("" when
	// none), why, and how many entries were salvaged from it.
	quarantined string
	reason      error
	salvaged    int
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, spoolRecovery{}, fmt.Errorf("sink: spool directory: %w", err)
	}
	s := &spool{
		path: filepath.Join(dir, SpoolFile),
		opts: &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
			// Address space for the whole file at its bound (about 1.3 x
			// the entries) from the start: bbolt remaps as the file grows,
			// copying the transaction's pages out and holding readers.
			InitialMmapSize: int(min(2*maxBytes, 1<<34))},
	}
	rec, err := s.open()
	switch {
	case err == nil:
	case errors.Is(err, berrors.ErrTimeout):
		return nil, rec, fmt.Errorf("%w: %s is locked (is another deadlabourd using spool.dir?)", ErrSpoolBusy, s.path)
	case errors.Is(err, errSpoolCorrupt):
		why := err
		q := fmt.Sprintf("%s.corrupt-%s", s.path, time.Now().UTC().Format("20060102T150405.000000000Z"))
		if rerr := os.Rename(s.path, q); rerr != nil {
			return nil, rec, fmt.Errorf("sink: %w; moving it aside: %w", err, rerr)
		}
		if rec, err = s.open(); err != nil {
			return nil, rec, fmt.Errorf("sink: fresh spool after moving an unreadable one to %s: %w", q, err)
		}
		rec.quarantined = q
		var serr error
		rec.salvaged, serr = s.salvage(q)
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
		for _, name := range [][]byte{bucketCost, bucketTelemetry, bucketSeries, bucketMeta} {
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

// corruptOr marks bbolt's errors for a damaged file as errSpoolCorrupt.
func corruptOr(err error) error {
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrInvalidMapping) {
		return fmt.Errorf("%w: %w", errSpoolCorrupt, err)
	}
	return err
}

// catchCorrupt turns a panic in bbolt, or a fault reading its memory map
// past a truncated file (with debug.SetPanicOnFault), into errSpoolCorrupt:
// call it with recover() from a deferred function.
func catchCorrupt(err *error, panicked any) {
	if panicked != nil {
		*err = fmt.Errorf("%w: %v", errSpoolCorrupt, panicked)
	}
}

// counts returns the undelivered entries by kind and their bytes, the
// lines staged for the commit in progress included.
func (s *spool) counts() (points [numKinds]int, bytes int64) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for k := range numKinds {
		points[k] = int(s.points[k] + s.staged[k])
	}
	return points, s.bytes + s.stagedBytes
}

// closeQuietly closes a file that may be damaged: a fault inside bbolt's
// close is not ours to report twice.
func closeQuietly(db *bolt.DB) {
	defer func() { _ = recover() }()
	db.Close()
}

// spooledBytes is the entry bytes in the file, undelivered.
func (s *spool) spooledBytes() int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.bytes
}

// stage counts lines as on their way into the spool: the caller takes
// them from its own count under its lock and stages them under the same
// lock, so that no reader sees them in neither place. The commit of the
// lines clears them as it counts them spooled; unstage, after a failed
// commit, as the caller takes them back.
func (s *spool) stage(lines []pendingLine) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for _, l := range lines {
		s.staged[l.kind]++
		s.stagedBytes += entrySize(l.line)
	}
}

func (s *spool) unstage() {
	s.cmu.Lock()
	s.staged, s.stagedBytes = [numKinds]int64{}, 0
	s.cmu.Unlock()
}

// salvage copies the entries whose checksum holds from the unreadable file
// at path into s, in order, up to the first one it cannot read.
func (s *spool) salvage(path string) (n int, reason error) {
	defer func() { catchCorrupt(&reason, recover()) }()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if err != nil {
		return 0, err
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
	return n, errors.Join(err, flush())
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

// commitResult says what a commit did.
type commitResult struct {
	added   [numKinds]int
	evicted [numKinds]int // older telemetry deleted to make room
	dropped [numKinds]int // lines of the batch not written, for want of room
}

// commit deletes the entries resolved since the last commit and appends
// lines, in one fsynced transaction. If the spool would hold more than
// maxBytes it makes room: first by deleting its oldest telemetry not in
// flight, then by not writing the batch's newest telemetry, then its newest
// cost lines. It also raises each series' highest timestamp. On error
// nothing changed.
//
// Commits are serialised by the caller. Only a commit that must make room
// holds mu, against next choosing a batch meanwhile: the sender goes on
// sending while an ordinary commit waits for its fsync.
func (s *spool) commit(lines []pendingLine, maxBytes int64) (commitResult, error) {
	var res commitResult
	resolved := s.resolved.Load()
	if len(lines) == 0 && s.deleted == resolved {
		return res, nil
	}
	var (
		add, freed, dropped int64
		keep                = make([]bool, len(lines))
		seq                 = s.seq
	)
	for i, l := range lines {
		add += entrySize(l.line)
		keep[i] = true
	}
	// Only commits add bytes, so room found now stays.
	if s.spooledBytes()+add > maxBytes {
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range kindBuckets {
			if err := deleteThrough(tx.Bucket(name), resolved); err != nil {
				return err
			}
		}
		need := s.spooledBytes() + add - maxBytes
		if need > 0 { // mu is held
			// The oldest telemetry not in flight.
			b := tx.Bucket(bucketTelemetry)
			var evict [][]byte
			c := b.Cursor()
			for k, v := c.Seek(seqKey(max(s.inflight, resolved) + 1)); k != nil && freed < need; k, v = c.Next() {
				freed += int64(len(v))
				evict = append(evict, k) // valid until the transaction ends
			}
			for _, k := range evict {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			res.evicted[kindTelemetry] = len(evict)
			need -= freed
		}
		for _, k := range []kind{kindTelemetry, kindCost} {
			for i := len(lines) - 1; i >= 0 && need > 0; i-- {
				if keep[i] && lines[i].kind == k {
					keep[i] = false
					need -= entrySize(lines[i].line)
					dropped += entrySize(lines[i].line)
					res.dropped[k]++
				}
			}
		}
		buckets := [numKinds]*bolt.Bucket{tx.Bucket(bucketCost), tx.Bucket(bucketTelemetry)}
		for _, b := range buckets {
			b.FillPercent = 1 // appends only: fill pages
		}
		highest := map[string]int64{}
		// bbolt keeps keys and values until the commit: one arena for all.
		arena := make([]byte, 0, add+8*int64(len(lines)))
		for i, l := range lines {
			if !keep[i] {
				continue
			}
			start := len(arena)
			arena = binary.BigEndian.AppendUint64(arena, seq)
			arena = appendEntry(arena, l.enqueued, l.line)
			if err := buckets[l.kind].Put(arena[start:start+8], arena[start+8:]); err != nil {
				return err
			}
			seq++
			res.added[l.kind]++
			if series, ts, ok := splitLine(l.line); ok {
				if h, ok := highest[string(series)]; !ok || ts > h {
					highest[string(series)] = ts
				}
			}
		}
		sb := tx.Bucket(bucketSeries)
		for series, ts := range highest {
			if v := sb.Get([]byte(series)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= ts {
				continue
			}
			if err := sb.Put([]byte(series), binary.BigEndian.AppendUint64(nil, uint64(ts))); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).SetSequence(seq)
	})
	if err != nil {
		return commitResult{}, err
	}
	s.seq, s.deleted = seq, resolved
	s.cmu.Lock()
	s.bytes += add - freed - dropped
	for k := range numKinds {
		s.points[k] += int64(res.added[k] - res.evicted[k])
	}
	s.staged, s.stagedBytes = [numKinds]int64{}, 0
	s.cmu.Unlock()
	return res, nil
}

// deleteThrough deletes the entries of b numbered up to seq.
func deleteThrough(b *bolt.Bucket, seq uint64) error {
	var keys [][]byte // collected first: a cursor crawls over emptied pages
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq; k, _ = c.Next() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

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

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
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
