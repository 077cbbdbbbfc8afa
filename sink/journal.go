// The journal: facts the engine needs to recover after a crash (finished
// requests, meter intervals), kept in the spool's file in a bucket of its
// own and written by the same group commit as the points, so that a point
// and the journal changes enqueued with it are durable together or not at
// all. Delivery never reads it.

package sink

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deadlabour/deadlabour/schema"
)

var bucketJournal = []byte("journal")

// ErrJournalFull: EnqueueJournaled dropped journal changes, because more
// than maxJournalBacklog bytes of them wait for a commit (the disk failing).
var ErrJournalFull = errors.New("sink: journal backlog full")

// maxJournalBacklog bounds the journal changes enqueued without points and
// not yet committed.
const maxJournalBacklog = 16 << 20

// JournalOp is one change of the journal: Put (Value non-nil), Delete
// (Value and Until nil), or a range deletion of every key from Key up to,
// not including, Until (Until non-nil; Key nil from the first).
type JournalOp struct {
	Key, Value, Until []byte
}

func (o JournalOp) size() int64 { return int64(len(o.Key) + len(o.Value) + len(o.Until) + 16) }

func (o JournalOp) apply(b *bolt.Bucket) error {
	switch {
	case o.Value != nil:
		return b.Put(o.Key, o.Value)
	case o.Until == nil:
		return b.Delete(o.Key)
	}
	var keys [][]byte
	c := b.Cursor()
	k, _ := c.First()
	if o.Key != nil {
		k, _ = c.Seek(o.Key)
	}
	for ; k != nil && bytes.Compare(k, o.Until) < 0; k, _ = c.Next() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueJournaled enqueues points as Enqueue does, with journal changes
// that are committed in the same transaction as the last of the points
// (with a commit of their own when no point is queued). Changes that come
// with points are dropped only with those points; changes without points
// are dropped, with ErrJournalFull, when the journal's backlog is full.
func (w *Writer) EnqueueJournaled(ops []JournalOp, points ...schema.Point) error {
	// Under Enqueue's lock: ops go on the last line of this call's own.
	err := w.enqueue(points, func(accepted []int) {
		if len(ops) == 0 {
			return
		}
		if len(accepted) > 0 {
			l := &w.pending[accepted[len(accepted)-1]]
			l.journal = append(l.journal, ops...)
			return
		}
		var size int64
		for _, o := range ops {
			size += o.size()
		}
		if w.journalBytes+size > maxJournalBacklog || w.closed {
			ops = nil
			return
		}
		w.journalBytes += size
		w.pending = append(w.pending, pendingLine{kind: kindTelemetry, journal: ops, jbytes: size})
	})
	if ops == nil {
		err = errors.Join(err, fmt.Errorf("%w: journal changes dropped", ErrJournalFull))
	}
	return err
}

// ReadJournal returns every entry of the journal, in key order.
func (w *Writer) ReadJournal() (keys, values [][]byte, err error) {
	err = w.spool.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			keys = append(keys, bytes.Clone(k))
			values = append(values, bytes.Clone(v))
			return nil
		})
	})
	return keys, values, err
}

// journalBytes is the size of the journal-only lines among lines.
func journalBytes(lines []pendingLine) (n int64) {
	for _, l := range lines {
		n += l.jbytes
	}
	return n
}
