// Command spoolchoice measures the two on-disk libraries considered for the
// sink's spool on the spool's own access pattern: group commits of appended
// line-protocol lines (one fsync per commit), batches read from the head and
// deleted once delivered. It is a separate module so that the loser is not a
// dependency of deadlabour. Run: cd scripts/spoolchoice && go run . -dir /var/tmp
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tidwall/wal"
	bolt "go.etcd.io/bbolt"
)

var (
	dir       = flag.String("dir", os.TempDir(), "where the spools are made (use the disk the daemon would)")
	points    = flag.Int("points", 200_000, "lines appended")
	perCommit = flag.Int("commit", 2_000, "lines per group commit (fsync)")
	batch     = flag.Int("batch", 5_000, "lines read and deleted per delivered batch")
	lineBytes = flag.Int("line", 800, "bytes per line (a request record is about 800)")
)

type spool interface {
	append(seq uint64, lines [][]byte) error // one durable group commit
	readDelete(from uint64, n int) (int, error)
	close() error
	size() int64
}

func main() {
	flag.Parse()
	line := []byte(strings.Repeat("x", *lineBytes))
	for _, name := range []string{"bbolt", "tidwall/wal"} {
		d, err := os.MkdirTemp(*dir, "spoolchoice-")
		if err != nil {
			log.Fatal(err)
		}
		var s spool
		if name == "bbolt" {
			s, err = openBolt(d)
		} else {
			s, err = openWAL(d)
		}
		if err != nil {
			log.Fatal(err)
		}
		lines := make([][]byte, *perCommit)
		for i := range lines {
			lines[i] = line
		}
		start := time.Now()
		var seq uint64 = 1
		commits := 0
		for seq <= uint64(*points) {
			if err := s.append(seq, lines); err != nil {
				log.Fatal(err)
			}
			seq += uint64(len(lines))
			commits++
		}
		appendDur := time.Since(start)
		full := s.size()
		start = time.Now()
		for from := uint64(1); from < seq; from += uint64(*batch) {
			if _, err := s.readDelete(from, *batch); err != nil {
				log.Fatal(err)
			}
		}
		drainDur := time.Since(start)
		fmt.Printf("%-12s append %8.0f lines/s (%5.2f ms per commit of %d)  read+delete %8.0f lines/s  disk %.0f MiB for %.0f MiB of lines (x%.2f); after drain %.1f MiB\n",
			name, float64(seq-1)/appendDur.Seconds(), appendDur.Seconds()*1000/float64(commits), *perCommit,
			float64(seq-1)/drainDur.Seconds(), float64(full)/(1<<20), float64(int(seq-1)**lineBytes)/(1<<20),
			float64(full)/float64(int(seq-1)**lineBytes), float64(s.size())/(1<<20))
		s.close()
		os.RemoveAll(d)
	}
}

type boltSpool struct {
	db   *bolt.DB
	path string
}

func openBolt(dir string) (*boltSpool, error) {
	p := filepath.Join(dir, "spool.db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	return &boltSpool{db: db, path: p}, db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("l")); return err })
}

func (s *boltSpool) append(seq uint64, lines [][]byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("l"))
		b.FillPercent = 1
		for i, l := range lines {
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq+uint64(i))
			if err := b.Put(k[:], l); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltSpool) readDelete(from uint64, n int) (int, error) {
	var keys [][]byte
	total := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("l")).Cursor()
		for k, v := c.First(); k != nil && len(keys) < n; k, v = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
			total += len(v)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("l"))
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltSpool) close() error { return s.db.Close() }
func (s *boltSpool) size() int64 {
	fi, _ := os.Stat(s.path)
	return fi.Size()
}

type walSpool struct {
	l   *wal.Log
	dir string
}

func openWAL(dir string) (*walSpool, error) {
	l, err := wal.Open(dir, &wal.Options{NoSync: true, AllowEmpty: true})
	return &walSpool{l: l, dir: dir}, err
}

func (s *walSpool) append(seq uint64, lines [][]byte) error {
	var b wal.Batch
	for i, l := range lines {
		b.Write(seq+uint64(i), l)
	}
	if err := s.l.WriteBatch(&b); err != nil {
		return err
	}
	return s.l.Sync()
}

func (s *walSpool) readDelete(from uint64, n int) (int, error) {
	last, _ := s.l.LastIndex()
	total := 0
	i := from
	for ; i < from+uint64(n) && i <= last; i++ {
		v, err := s.l.Read(i)
		if err != nil {
			return 0, err
		}
		total += len(v)
	}
	return total, s.l.TruncateFront(i)
}

func (s *walSpool) close() error { return s.l.Close() }
func (s *walSpool) size() int64 {
	var n int64
	filepath.Walk(s.dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
