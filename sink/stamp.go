package sink

import (
	"bytes"
	"strconv"
	"time"
)

// A point's identity in InfluxDB is its series (measurement and tags) and
// its timestamp: a second point with both overwrites the first. Within a
// process the estimator gives every record its own nanosecond. Across a
// restart that is not enough: the new process knows nothing of the
// timestamps the old one gave, some of which may still wait in the spool,
// and a wall clock stepped back (NTP after a reboot) or a telemetry window
// stamped with its start could land a new point on an old one.
//
// So the spool keeps, per series, the highest timestamp ever spooled (the
// floor), and a new process moves any line at or below its series' floor
// to just above everything that series has seen, 1 ns at a time. A record
// replayed from the spool is never moved: it was stamped once and is sent
// as stored, so it overwrites itself. A series with no point for 30 days
// (floorHorizon) before the newest is forgotten at start.

const (
	maxMoved     = 4096
	movedHorizon = time.Hour
)

// stamper moves lines that could collide with an earlier run's. It is used
// under the Writer's Enqueue lock.
type stamper struct {
	// floor is each series' highest timestamp spooled by earlier runs.
	floor map[string]int64
	// top is, for series with a floor, the highest timestamp this run has
	// given them (starting at the floor).
	top map[string]int64
	// moved are the timestamps this run moved lines to, per series: a later
	// line stamped with one of them by the estimator must move too.
	moved map[string]map[int64]struct{}
	// pruneAt is, per series, the size of moved at which it is next pruned:
	// twice what a pruning left, so that moves all within the horizon do
	// not make every later move scan them all.
	pruneAt map[string]int
	n       uint64 // lines moved
}

func newStamper(floors map[string]int64) *stamper {
	return &stamper{floor: floors, top: map[string]int64{}, moved: map[string]map[int64]struct{}{}, pruneAt: map[string]int{}}
}

// fix returns line, with its timestamp moved if it could overwrite a point
// of an earlier run or one this run moved. line must own its bytes: it may
// be rewritten in place.
func (s *stamper) fix(line []byte) []byte {
	series, ts, ok := splitLine(line)
	if !ok {
		return line
	}
	floor, ok := s.floor[string(series)]
	if !ok {
		return line
	}
	top, ok := s.top[string(series)]
	if !ok {
		top = floor
	}
	switch _, taken := s.moved[string(series)][ts]; {
	case ts > top:
		s.top[string(series)] = ts
		return line
	case ts > floor && !taken:
		return line // above every earlier run's point, below this run's newest
	}
	// At or below the floor, or on a timestamp this run moved a line to.
	top++
	key := string(series)
	s.top[key] = top
	if s.moved[key] == nil {
		s.moved[key] = map[int64]struct{}{}
	}
	s.moved[key][top] = struct{}{}
	if len(s.moved[key]) > max(s.pruneAt[key], maxMoved) {
		// Lines arrive at most a few minutes out of order (the estimator's
		// history); forget moves far below the newest.
		for t := range s.moved[key] {
			if t < top-int64(movedHorizon) {
				delete(s.moved[key], t)
			}
		}
		s.pruneAt[key] = 2 * len(s.moved[key])
	}
	s.n++
	i := bytes.LastIndexByte(line, ' ')
	return strconv.AppendInt(line[:i+1], top, 10)
}

// splitLine returns the series key (measurement and tags, escaped as
// encoded) and the timestamp of an encoded line. The encoder refuses a
// backslash before a character it escapes, so the first space without a
// backslash before it ends the series key; the timestamp is the last field.
func splitLine(line []byte) (series []byte, ts int64, ok bool) {
	end := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' && (i == 0 || line[i-1] != '\\') {
			end = i
			break
		}
	}
	last := bytes.LastIndexByte(line, ' ')
	if end <= 0 || last <= end {
		return nil, 0, false
	}
	ts, err := strconv.ParseInt(string(line[last+1:]), 10, 64)
	if err != nil {
		return nil, 0, false
	}
	return line[:end], ts, true
}
