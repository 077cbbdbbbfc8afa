// The committer's side of the spool: one fsynced transaction that appends
// what was enqueued, deletes what was delivered and makes room.

package sink

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

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
		keep[i] = l.line != nil
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
		jb := tx.Bucket(bucketJournal)
		for i, l := range lines {
			if keep[i] || l.line == nil {
				for _, o := range l.journal {
					if err := o.apply(jb); err != nil {
						return err
					}
				}
			}
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
	if len(lines) > 0 { // a commit of deletions alone leaves the lines staged for the next
		s.staged, s.stagedBytes = [numKinds]int64{}, 0
	}
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
