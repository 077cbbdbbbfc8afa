package sink

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

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

// entrySize is 0 for a journal-only line (no line): it is no entry.
func entrySize(line []byte) int64 {
	if line == nil {
		return 0
	}
	return int64(len(line)) + entryHeader
}

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
	// journal: changes of the journal committed with this line (see
	// journal.go); a line nil with them is a journal-only line, of jbytes.
	journal []JournalOp
	jbytes  int64
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

// stagingBytes is the entry bytes of the lines staged for the commit in
// progress.
func (s *spool) stagingBytes() int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.stagedBytes
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
		if l.line == nil {
			continue
		}
		s.staged[l.kind]++
		s.stagedBytes += entrySize(l.line)
	}
}

func (s *spool) unstage() {
	s.cmu.Lock()
	s.staged, s.stagedBytes = [numKinds]int64{}, 0
	s.cmu.Unlock()
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}
